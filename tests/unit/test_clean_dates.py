import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthtech_etl.cells import cell_text
from healthtech_etl.dates import days_from_civil, micros_to_datetime64, parse_booking_dates, to_micros

EPOCH = dt.date(1970, 1, 1)


def parse_one(cell, day_first=False):
    row = parse_booking_dates(pd.Series([cell], dtype=object), day_first=day_first).iloc[0]
    if not row["parsed"]:
        return "missing" if row["missing"] else "invalid"
    micros = to_micros(np.array([row["days"]]), np.array([row["seconds"]]), np.array([row["micros"]]))
    return micros_to_datetime64(micros)[0].item()


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("10/21/2025", dt.datetime(2025, 10, 21)),
        ("1/2/2025", dt.datetime(2025, 1, 2)),
        ("10/21/2025 14:05", dt.datetime(2025, 10, 21, 14, 5)),
        ("10/21/2025 14:05:09", dt.datetime(2025, 10, 21, 14, 5, 9)),
        ("2025-10-21", dt.datetime(2025, 10, 21)),
        ("2025/10/21", dt.datetime(2025, 10, 21)),
        ("2025-10-21 08:00", dt.datetime(2025, 10, 21, 8, 0)),
        ("10-21-2025", dt.datetime(2025, 10, 21)),
        ("10-21-2025 07:30", dt.datetime(2025, 10, 21, 7, 30)),
        ("2025-10-21T10:11:12", dt.datetime(2025, 10, 21, 10, 11, 12)),
        ("2025-10-21T10:11", dt.datetime(2025, 10, 21, 10, 11)),
        (" 2025-10-21 ", dt.datetime(2025, 10, 21)),
        ("2025-10-21 10:30:00.250000", dt.datetime(2025, 10, 21, 10, 30, 0, 250000)),
        ("45951", dt.datetime(2025, 10, 21)),  # Excel serial
        ("45951.5", dt.datetime(2025, 10, 21, 12, 0)),
        ("1", dt.datetime(1900, 1, 1)),
        ("59", dt.datetime(1900, 2, 28)),
        ("61", dt.datetime(1900, 3, 1)),
        ("02/29/2024", dt.datetime(2024, 2, 29)),
    ],
)
def test_accepted_formats(cell, expected):
    assert parse_one(cell) == expected


@pytest.mark.parametrize(
    "cell",
    ["02/30/2025", "31/31/2025", "02/29/2025", "2025-13-01", "2025-00-10", "next tuesday", "10/21/25",
     "2025-10-21 25:00", "2025-10/21", "60", "0", "21.10.2025", "2025-10-21 10:60"],
)
def test_impossible_dates_and_free_text_are_invalid(cell):
    assert parse_one(cell) == "invalid"


@pytest.mark.parametrize("cell", [None, "", "  "])
def test_empty_is_missing(cell):
    assert parse_one(cell) == "missing"


def test_day_first_switches_ambiguous_dates():
    assert parse_one("03/04/2025") == dt.datetime(2025, 3, 4)
    assert parse_one("03/04/2025", day_first=True) == dt.datetime(2025, 4, 3)
    assert parse_one("31/12/2025", day_first=True) == dt.datetime(2025, 12, 31)
    assert parse_one("31/12/2025") == "invalid"
    assert parse_one("2025-04-03", day_first=True) == dt.datetime(2025, 4, 3)  # ISO is never ambiguous


def test_far_future_years_are_parsed_not_lost():
    """Years past 2262 overflow datetime64[ns]; they must come back as real day numbers."""
    frame = parse_booking_dates(pd.Series([cell_text(dt.datetime(2300, 1, 1)), "01/01/9999"], dtype=object))
    assert frame["parsed"].tolist() == [True, True]
    assert frame["days"].tolist() == [(dt.date(2300, 1, 1) - EPOCH).days, (dt.date(9999, 1, 1) - EPOCH).days]


@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_days_from_civil_matches_the_calendar(day):
    got = days_from_civil(np.array([day.year]), np.array([day.month]), np.array([day.day]))[0]
    assert got == (day - EPOCH).days


@given(
    st.datetimes(min_value=dt.datetime(1900, 3, 1), max_value=dt.datetime(2200, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.sampled_from(["cell", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%m-%d-%Y %H:%M:%S",
                     "%Y-%m-%dT%H:%M:%S", "serial"]),
)
def test_every_rendering_round_trips(moment, style):
    if style == "cell":
        cell = cell_text(moment)
    elif style == "serial":
        delta = moment - dt.datetime(1899, 12, 30)
        cell = cell_text(delta.days + delta.seconds / 86400)
    else:
        cell = moment.strftime(style)
    assert parse_one(cell) == moment


def test_repeated_strings_are_parsed_once_and_mapped_back():
    cells = pd.Series(["10/21/2025", None, "bad", "10/21/2025"] * 3, dtype=object)
    frame = parse_booking_dates(cells)
    assert frame["parsed"].tolist() == [True, False, False, True] * 3
    assert frame["missing"].tolist() == [False, True, False, False] * 3


@pytest.mark.parametrize("cell", ["２０２５-10-21", "10/21/２０２５", "٤٥٩٥١"])
def test_only_ascii_digits_make_a_date(cell):
    assert parse_one(cell) == "invalid"
