import datetime as dt

import numpy as np
import pandas as pd

from healthtech_etl.cells import cell_text
from healthtech_etl.clean import clean_appointments, clean_doctors, reason_counts
from healthtech_etl.dates import micros_to_datetime64

AS_OF = dt.date(2025, 11, 1)


def frame(columns, rows):
    data = pd.DataFrame([[cell_text(v) for v in row] for row in rows], columns=list(columns), dtype=object)
    data["source_row"] = np.arange(2, 2 + len(rows))
    return data


def doctors(rows):
    return clean_doctors(frame(("doctor_id", "name", "specialty"), rows))


def appointments(rows, known=(1, 2), **kwargs):
    columns = ("booking_id", "patient_id", "doctor_id", "booking_date", "status")
    return clean_appointments(frame(columns, rows), np.array(known), as_of=kwargs.pop("as_of", AS_OF), **kwargs)


def reasons_by_row(result):
    return dict(zip(result.rejected["source_row"], result.rejected["reasons"]))


def test_doctor_rules():
    result = doctors([
        (1, " Dr.  Ana ", " cardiology "),
        ("2.0", "Dr. Bo", None),
        ("X3", "Dr. Junk", "Neurology"),
        (4, "  ", "Neurology"),
        (1, " Dr.  Ana ", " cardiology "),
        ("1", "Dr. Other", "Oncology"),
        (None, None, None),
    ])
    assert result.valid[["id", "name", "specialty"]].values.tolist() == [
        [1, "Dr. Ana", "Cardiology"], [2, "Dr. Bo", None],
    ]
    assert reasons_by_row(result) == {
        4: "invalid_doctor_id",
        5: "missing_name",
        6: "duplicate_row",
        7: "duplicate_doctor_id",
        8: "missing_doctor_id;missing_name",
    }
    assert result.rejected["record_id"].tolist() == [None, 4, 1, 1, None]
    assert result.rejected["doctor_id"].tolist()[0] == "X3"  # raw cell kept for the audit


def test_appointment_rules_each_row_gets_every_reason():
    result = appointments([
        (1, 34, 1, "10/21/2025", "Confirmed"),
        ("37X", None, "Dr 2", "02/30/2025", "confirmed"),
        (3, 5, 9, dt.datetime(2300, 1, 1), "cancelled"),
        (4, 5, 2, None, "pending"),
        (1, 34, 1, "10/21/2025", "Confirmed"),
        (1, 7, 2, "10/22/2025", "cancelled"),
        (5, 7, 2, "2026-11-02", "cancelled"),
        (6, 7, 2, "2026-11-01", "cancelled"),
        (7, 7, 2, "12/31/1899", "cancelled"),
    ])
    assert reasons_by_row(result) == {
        3: "invalid_booking_id;missing_patient_id;invalid_doctor_id;invalid_booking_date",
        4: "booking_date_out_of_range;unknown_doctor",
        5: "missing_booking_date",
        6: "duplicate_row",  # an exact copy is a duplicate row, not a second holder of the id
        7: "duplicate_booking_id",
        8: "booking_date_out_of_range",
        10: "booking_date_out_of_range",
    }
    valid = result.valid
    assert valid["id"].tolist() == [1, 6]
    assert micros_to_datetime64(valid["booking_date"]).tolist() == [dt.datetime(2025, 10, 21), dt.datetime(2026, 11, 1)]
    assert valid["status"].tolist() == ["confirmed", "cancelled"]


def test_first_valid_row_wins_a_repeated_booking_id_even_after_an_invalid_one():
    result = appointments([
        (1, 34, 9, "10/21/2025", "confirmed"),  # unknown doctor: not "valid", so not the first holder of id 1
        (1, 35, 1, "10/22/2025", "confirmed"),
    ])
    assert result.valid["patient_id"].tolist() == [35]
    assert reasons_by_row(result) == {2: "unknown_doctor"}


def test_horizon_and_as_of_are_configurable():
    rows = [(1, 1, 1, "2025-11-11", "confirmed")]
    assert len(appointments(rows, horizon_days=10).valid) == 1
    assert reasons_by_row(appointments(rows, horizon_days=9)) == {2: "booking_date_out_of_range"}
    assert len(appointments(rows, as_of=dt.date(2024, 11, 11), horizon_days=365).valid) == 1


def test_stats_for_metrics():
    result = appointments([
        (1, 34, 1, "10/21/2025", "x"),
        (2, None, 1, "bad", "confirmed"),
        (3, 4, 9, "10/21/2025", "confirmed"),
        (3, 4, 9, "10/21/2025", "confirmed"),
        (4, 4, "z", None, "confirmed"),
    ])
    stats = result.stats
    assert stats["read"] == 5
    assert stats["ids_complete"] == 3  # rows 1, 3, 4
    assert stats["doctor_id_valid"] == 4
    assert stats["doctor_known"] == 2
    assert stats["exact_duplicates"] == 1
    assert stats["dates_non_empty"] == 4
    assert stats["dates_parsed"] == 3
    assert result.unknown_statuses == {"x": 1}
    assert reason_counts(result)["unknown_doctor"] == 2


# --- exact duplicates from the reader's codes agree with pandas' duplicated (the reference) -----

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from healthtech_etl import clean as clean_module  # noqa: E402
from healthtech_etl.cells import column_codes  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4).flatmap(lambda width: st.lists(
    st.lists(st.one_of(st.none(), st.sampled_from(["1", "2", "3", "x", 1.0, 2.5])), min_size=width, max_size=width),
    min_size=0, max_size=40)))
def test_duplicates_from_codes_are_pandas_duplicates(rows):
    columns = tuple(f"c{index}" for index in range(len(rows[0]) if rows else 1))
    raw = pd.DataFrame(rows, columns=list(columns), dtype=object)
    codes = [column_codes(raw[column]).codes for column in columns]
    assert clean_module._duplicate_codes(codes).tolist() == raw.duplicated(subset=list(columns), keep="first").tolist()
