"""Offending values, column profile and column checks, each checked against a computation of its
own over the cells the test made (calamine's cells: floats for numbers, "" for empty)."""

import datetime as dt
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthtech_etl import schema
from healthtech_etl.clean import clean_appointments, clean_doctors
from healthtech_etl.contract import Check
from healthtech_etl.offending import _fill_series, offending_values, reason_column
from healthtech_etl.profile import profile_and_checks

AS_OF = dt.date(2025, 11, 1)
LAST_ALLOWED = AS_OF + dt.timedelta(days=365)


def frame(columns, rows):
    data = pd.DataFrame([list(row) for row in rows], columns=list(columns), dtype=object)
    data["source_row"] = np.arange(2, 2 + len(rows))
    return data


def run(doctor_rows, appointment_rows, checks=()):
    raw = {"doctors": frame(schema.DOCTOR_COLUMNS, doctor_rows),
           "appointments": frame(schema.APPOINTMENT_COLUMNS, appointment_rows)}
    doctors = clean_doctors(raw["doctors"])
    results = {"doctors": doctors, "appointments": clean_appointments(
        raw["appointments"], doctors.valid["id"].to_numpy(), as_of=AS_OF)}
    known = doctors.valid["id"].to_numpy()
    offending = offending_values({e: r.rejected for e, r in results.items()}, known, "doctors_in_file", AS_OF, 365)
    profile, checked = profile_and_checks(raw, results, tuple(checks))
    return offending, profile, checked


DOCTORS = [(100.0, "Dr. A", "Cardiology"), (101.0, "Dr. B", ""), (102.0, "Dr. C", "Cardiology")]


def appointments_with_problems():
    rows = [(float(1 + i), float(1 + i % 7), float(100 + i % 3), dt.datetime(2025, 10, 1 + i % 20, 9), "confirmed")
            for i in range(60)]
    for i in (4, 9, 33):
        rows[i] = rows[i][:2] + (105.0,) + rows[i][3:]
    rows[50] = rows[50][:2] + (106.0,) + rows[50][3:]
    for k, i in enumerate(range(20, 26)):  # a fill series: one day later per row, past the window
        rows[i] = rows[i][:3] + (dt.datetime(2026, 12, 30, 8) + dt.timedelta(days=k),) + rows[i][4:]
    rows[40] = rows[40][:1] + ("",) + rows[40][2:]  # missing patient id
    rows[41] = rows[41][:3] + ("31/31/2025",) + rows[41][4:]  # invalid date
    rows[42] = rows[42][:3] + ("31/31/2025",) + rows[42][4:]
    return rows


def test_offending_values_per_reason_against_the_rows():
    rows = appointments_with_problems()
    offending, _, _ = run(DOCTORS, rows)
    found = offending["appointments"]
    unknown = [(i + 2, row[2]) for i, row in enumerate(rows) if row[2] not in (100.0, 101.0, 102.0)]
    assert found["unknown_doctor"]["count"] == len(unknown)
    assert (found["unknown_doctor"]["first_row"], found["unknown_doctor"]["last_row"]) == (unknown[0][0], unknown[-1][0])
    assert found["unknown_doctor"]["top_values"] == [
        {"value": str(int(doctor)), "count": count, "first_row": min(r for r, d in unknown if d == doctor),
         "last_row": max(r for r, d in unknown if d == doctor)}
        for doctor, count in sorted(Counter(d for _, d in unknown).items(), key=lambda item: -item[1])]
    assert found["unknown_doctor"]["known_doctor_ids"] == {"count": 3, "min": "100", "max": "102",
                                                           "basis": "doctors_in_file"}
    late = [(i + 2, row[3]) for i, row in enumerate(rows) if isinstance(row[3], dt.datetime)
            and row[3].date() > LAST_ALLOWED]
    assert found["booking_date_out_of_range"]["date_range"] == {
        "found_min": min(d for _, d in late).date().isoformat(), "found_max": max(d for _, d in late).date().isoformat(),
        "allowed_min": "1900-01-01", "allowed_max": LAST_ALLOWED.isoformat(),
        "pattern": f"1 day later per row, rows {late[0][0]}-{late[-1][0]}"}
    assert found["invalid_booking_date"]["top_values"] == [{"value": "31/31/2025", "count": 2, "first_row": 43,
                                                           "last_row": 44}]
    assert found["missing_patient_id"] == {"count": 1, "column": "patient_id", "first_row": 42, "last_row": 42,
                                           "top_values": []}
    counts = [info["count"] for info in found.values()]
    assert counts == sorted(counts, reverse=True)  # the most frequent reason first
    assert offending["doctors"] == {}


def test_every_reason_code_names_a_column_of_its_entity_or_none():
    for codes, columns in ((schema.DOCTOR_REASONS, schema.DOCTOR_COLUMNS),
                           (schema.APPOINTMENT_REASONS, schema.APPOINTMENT_COLUMNS)):
        for code in codes:
            column = reason_column(code)
            assert column in columns if code not in (schema.DUPLICATE_ROW, schema.UNREADABLE_ROW) else column is None


def test_free_text_values_are_escaped_and_cut():
    rows = [(1.0, 1.0, 100.0, dt.datetime(2025, 10, 2), "confirmed"),
            (2.0, 1.0, "Dr 1\nFAKE LOG LINE " + "x" * 200, dt.datetime(2025, 10, 2), "confirmed")]
    offending, profile, _ = run(DOCTORS, rows)
    value = offending["appointments"]["invalid_doctor_id"]["top_values"][0]["value"]
    assert "\n" not in value and value.startswith("Dr 1\\nFAKE LOG LINE") and value.endswith("...(219 chars)")
    assert all("\n" not in v["value"] for v in profile["appointments"]["doctor_id"]["top_values"])


@pytest.mark.parametrize("rows, days, pattern", [
    ([5, 6, 7, 8], [0, 365, 731, 1096], "one year per row, rows 5-8"),  # 2028 is a leap year: still one year
    ([5, 6, 7, 9, 10], [0, 7, 14, 21, 28], "7 days later per row, rows 5-7"),
    ([5, 6, 8], [0, 1, 2], None),
    ([5, 6, 7], [3, 3, 3], None),
    ([2, 3, 4, 5], [10, 9, 8, 7], "1 day earlier per row, rows 2-5"),
])
def test_fill_series(rows, days, pattern):
    base = (dt.date(2026, 3, 1) - dt.date(1970, 1, 1)).days
    assert _fill_series(np.array(rows), np.array(days) + base) == pattern


CELLS = st.one_of(st.integers(1, 12).map(float), st.sampled_from(["", "x7", "Dr 2", "   "]),
                  st.integers(1, 12).map(str))


@given(st.lists(CELLS, min_size=1, max_size=40), st.sampled_from([1, 10**12]))
def test_the_profile_of_an_id_column_counts_every_row_read(cells, scale):
    scaled = [cell * scale if isinstance(cell, float) else str(int(cell) * scale) if cell.isdigit() else cell
              for cell in cells]
    rows = [(float(i + 1), cell, 100.0, dt.datetime(2025, 10, 2), "confirmed") for i, cell in enumerate(scaled)]
    _, profile, _ = run(DOCTORS, rows)
    column = profile["appointments"]["patient_id"]
    ids = [int(c) for c in scaled if isinstance(c, float) or c.isdigit()]
    texts = [c for c in scaled if isinstance(c, str) and c.strip() and not c.isdigit()]
    assert column["rows"] == len(cells)
    assert column["nulls"] == len(cells) - len(ids) - len(texts)
    assert column["distinct"] == len(set(ids)) + len(set(texts))
    assert (column["min"], column["max"]) == ((str(min(ids)), str(max(ids))) if ids else
                                              (min(texts), max(texts)) if texts else (None, None))
    ranked = sorted([(-n, 0, v, str(v)) for v, n in Counter(ids).items()]
                    + [(-n, 1, 0, v) for v, n in Counter(texts).items()])
    expected = sorted([{"value": text, "count": -n} for n, _, _, text in ranked][:5], key=lambda item: -item["count"])
    assert column["top_values"] == expected


def test_text_columns_and_dates_are_profiled():
    rows = appointments_with_problems()
    _, profile, _ = run(DOCTORS, rows)
    status = profile["appointments"]["status"]
    assert (status["rows"], status["nulls"], status["distinct"]) == (len(rows), 0, 1)
    dates = profile["appointments"]["booking_date"]
    parsed = [row[3] for row in rows if isinstance(row[3], dt.datetime)]
    assert dates["min"] == str(min(parsed)) and dates["max"] == str(max(parsed))
    assert dates["distinct"] == len(set(parsed)) + 1  # and the one invalid text
    specialty = profile["doctors"]["specialty"]
    assert (specialty["nulls"], specialty["top_values"]) == (1, [{"value": "Cardiology", "count": 2}])


def test_column_checks_against_the_rows():
    rows = appointments_with_problems()
    checks = (Check("appointments", "booking_date", "range", "critical", low=dt.date(2025, 10, 1),
                    high=dt.date(2025, 10, 15)),
              Check("appointments", "doctor_id", "range", low=100, high=102),
              Check("appointments", "patient_id", "required_share", share=99.0),
              Check("appointments", "booking_date", "required_share", share=80.0))
    _, _, checked = run(DOCTORS, rows, checks)
    dates = [row[3] for row in rows if isinstance(row[3], dt.datetime)]
    outside = sum(1 for d in dates if not dt.date(2025, 10, 1) <= d.date() <= dt.date(2025, 10, 15))
    assert checked[0]["value"] == f"{min(dates).date()} .. {max(dates).date()}; {outside} outside"
    assert checked[0]["status"] == "critical"
    unknown = sum(1 for row in rows if row[2] not in (100.0, 101.0, 102.0))
    assert (checked[1]["value"], checked[1]["status"]) == (f"100 .. 106; {unknown} outside", "warning")
    assert checked[1]["detail"] == f"{unknown} of {len(rows)} doctor_id values lie outside 100 .. 102."
    share = round(100 * (len(rows) - 1) / len(rows), 2)
    assert (checked[2]["value"], checked[2]["status"]) == (f"{share:.2f} %", "ok" if share >= 99 else "warning")
    late = sum(1 for d in dates if d.date() > LAST_ALLOWED)
    valid_dates = round(100 * (len(dates) - late) / len(rows), 2)  # invalid and out-of-range dates are not valid
    assert (checked[3]["value"], checked[3]["status"]) == (f"{valid_dates:.2f} %", "ok" if valid_dates >= 80 else "warning")
    assert [c["expected"] for c in checked] == ["2025-10-01 .. 2025-10-15", "100 .. 102", ">= 99 %", ">= 80 %"]
