"""One truth across the readers: workbooks written as raw SpreadsheetML (every cell's stored type
chosen here) are read by every installed reader and by ``auto``, then cleaned; the cell text,
row numbers, counts, errors, valid rows and rejections must be identical. Fixed hostile cases
first, then Hypothesis-drawn mixes of the same kinds of cells and layouts."""

import sys
from datetime import date
from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_xlsx import Cell, b, e, empty, f, fs, inline, n, s, write_raw_xlsx
from raw_xlsx import date as date_cell

from healthtech_etl import clean, extract
from healthtech_etl.errors import EtlError
from healthtech_etl.extract import available_readers, read_sheet
from healthtech_etl.sheet_scan import NOT_A_VALUE, SheetPrefetch

# "fastexcel-early": fastexcel's read started in a forked child before the scans (the CLI's
# fast path, see dense_read), taken when the sheet is safe for it.
EARLY = ["fastexcel-early"] if "fastexcel" in available_readers() and sys.platform.startswith("linux") else []
READERS = [*available_readers(), "auto", *EARLY]
DOCTORS = clean.DOCTOR_COLUMNS
APPOINTMENTS = clean.APPOINTMENT_COLUMNS
AS_OF = date(2025, 11, 1)

HOSTILE_CELLS = [
    s("104"), s(" 34 "), s("37X"), s(""), s("a_x0000_b"), s("#VALUE!"), s("true"), s("10/21/2025"), s("Zoë\tÅ"),
    s("=1+1"), s("x" * 40_000), s("\u00a0"), inline("2025-10-21"), inline("Dr_x0009_Tab"), inline("  "),
    n(1), n(104), n(2**53 - 1), n(2**53), n(2**53 + 1), n(10**17), n(-5), n(0), n("104.0"), n(104.5), n(0.1),
    n("1E+20"), n(45950.5), n(123456789.123), n("1.5E-7"),
    date_cell(45950), date_cell("45950.395833333336"), date_cell(-18000), date_cell(0.5), date_cell(60),
    date_cell(0), date_cell(1), date_cell("2958465.9999"), date_cell(3000000), date_cell("45950.123456789"),
    b(True), b(False), e("#VALUE!"), e("#N/A"), e("#REF!"), f(None), f(12), f("1.25"), fs("ab"), empty(),
]


def outcome(path: Path, columns: tuple, reader: str) -> Any:
    """Everything a reader's result determines, or the error it raised."""
    prefetched = None
    if reader == "fastexcel-early":
        reader, prefetched = "fastexcel", SheetPrefetch(path, None, "sheet", fork=True, read_columns=columns)
    try:
        sheet = read_sheet(path, columns, reader=reader, entity="sheet", prefetched=prefetched)
    except EtlError as exc:
        return (type(exc).__name__, str(exc).replace(f"with {reader}", "with <reader>"))
    frame = sheet.frame
    return {
        "cells": frame.astype(object).where(frame.notna(), None).values.tolist(),
        "blank_rows": sheet.blank_rows,
        "skipped_header_rows": sheet.skipped_header_rows,
        "extra_columns": sheet.extra_columns,
        "frame": frame,
    }


def cleaned(result: dict, columns: tuple) -> Any:
    frame = result["frame"]
    if columns == DOCTORS:
        out = clean.clean_doctors(frame)
    else:
        out = clean.clean_appointments(frame, [1, 2, 104], AS_OF, horizon_days=3_000_000)
    return {
        "valid": out.valid.values.tolist(),
        "rejected": out.rejected.astype(object).where(out.rejected.notna(), None).values.tolist(),
        "stats": out.stats,
        "unknown": out.unknown_statuses,
    }


def assert_agree(path: Path, columns: tuple) -> Any:
    results = {reader: outcome(path, columns, reader) for reader in READERS}
    first, reference = READERS[0], results[READERS[0]]
    for reader, result in results.items():
        if isinstance(reference, tuple) or isinstance(result, tuple):
            assert result == reference, f"{reader} vs {first}"
            continue
        for key in ("cells", "blank_rows", "skipped_header_rows", "extra_columns"):
            assert result[key] == reference[key], f"{key}: {reader} vs {first}"
        assert cleaned(result, columns) == cleaned(reference, columns), f"cleaning: {reader} vs {first}"
    return reference


def header(columns: tuple) -> list[Optional[Cell]]:
    return [s(name) for name in columns]


def test_hostile_cells_in_every_column(tmp_path):
    """Every hostile cell in every column of both sheets."""
    for columns in (DOCTORS, APPOINTMENTS):
        rows = [header(columns)]
        for index, cell in enumerate(HOSTILE_CELLS):
            rows.append([cell if k == index % len(columns) else n(index + 1) for k in range(len(columns))])
            rows.append([cell] * len(columns))
        path = write_raw_xlsx(tmp_path / f"{columns[0]}.xlsx", rows)
        result = assert_agree(path, columns)
        assert isinstance(result, dict)


def test_inexact_numbers_errors_and_booleans_are_invalid_never_text(tmp_path):
    rows = [header(APPOINTMENTS),
            [n(2**53 + 1), n(7), n(1), date_cell(45950), s("confirmed")],
            [n(5), n(7), n(1), e("#VALUE!"), s("confirmed")],
            [n(6), b(True), n(1), date_cell(-18000), e("#N/A")],
            [s("9007199254740993"), n(7), n(1), date_cell(45950), s("confirmed")]]
    path = write_raw_xlsx(tmp_path / "a.xlsx", rows)
    result = assert_agree(path, APPOINTMENTS)
    out = clean.clean_appointments(result["frame"], [1], AS_OF)
    reasons = dict(zip(out.rejected["source_row"], out.rejected["reasons"]))
    assert reasons == {2: "invalid_booking_id", 3: "invalid_booking_date",  # a negative serial: before 1900
                       4: "invalid_patient_id;booking_date_out_of_range;invalid_status"}
    assert out.valid["id"].tolist() == [9007199254740993]  # text ids keep the 18-digit rule
    raw = out.rejected.set_index("source_row")
    assert raw.loc[3, "booking_date"] == "#VALUE!" and raw.loc[4, "status"] == "#N/A"  # shown without the mark
    assert raw.loc[4, "booking_date"] == "1850-09-18 00:00:00"
    assert not any(NOT_A_VALUE in str(value) for value in out.rejected.values.ravel())


def test_error_name_is_invalid_and_control_only_name_is_missing(tmp_path):
    rows = [header(DOCTORS), [n(1), e("#NAME?"), s("x")], [n(2), s("_x0000__x0001_"), None],
            [n(3), s("Dr_x0000_ Who"), b(False)], [n(4), s("y" * 32_768), None]]
    result = assert_agree(write_raw_xlsx(tmp_path / "d.xlsx", rows), DOCTORS)
    out = clean.clean_doctors(result["frame"])
    assert dict(zip(out.rejected["source_row"], out.rejected["reasons"])) == {
        2: "invalid_name", 3: "missing_name", 4: "invalid_specialty", 5: "invalid_name"}
    assert out.stats[clean.CONTROL_CHARACTERS] == 2
    assert len(out.rejected.set_index("source_row").loc[5, "name"]) == clean.MAX_CELL_CHARS


def test_true_row_numbers_after_titles_blank_rows_and_columns(tmp_path):
    rows = [[s("Appointments export")], [date_cell(45950)], None,
            [None, *header(APPOINTMENTS)],
            [None, n(1), n(7), n(1), s("10/21/2025"), s("confirmed")],
            None,
            [None, s("37X"), n(7), n(1), s("10/21/2025"), s("confirmed")]]
    path = write_raw_xlsx(tmp_path / "a.xlsx", rows, first_row=2, first_column=1, merged=["B2:D2"])
    result = assert_agree(path, APPOINTMENTS)
    assert result["skipped_header_rows"] == 4
    assert result["frame"]["source_row"].tolist() == [6, 8]  # header at row 5
    assert result["blank_rows"] == 1


def test_no_header_names_the_sheet_and_what_was_seen(tmp_path):
    rows = [[s("A very long report title that goes on and on and on")], [s("booking_id"), s("status")]]
    path = write_raw_xlsx(tmp_path / "a.xlsx", rows, sheet="Export", extra_sheets=["Other"])
    result = assert_agree(path, APPOINTMENTS)
    kind, message = result
    assert kind == "InputFileError"
    assert "sheet 'Export' (sheets: Export, Other)" in message and "lacks mandatory column(s)" in message
    assert "'A very long report title that goes on an...'" in message


def test_header_below_row_20_is_not_searched(tmp_path):
    rows = [None] * 20 + [header(DOCTORS), [n(1), s("A"), None]]
    result = assert_agree(write_raw_xlsx(tmp_path / "d.xlsx", rows), DOCTORS)
    assert result[0] == "InputFileError" and "is empty" in result[1]


@pytest.mark.parametrize("dimension", ["A1:XFD1048576", "A1:C3", None])  # declared, hidden, absent
def test_stray_far_cell_is_read_without_a_dense_allocation(tmp_path, caplog, dimension):
    rows = [header(DOCTORS), [n(1), s("A"), None], [n(2), s("B"), s("x")]]
    path = write_raw_xlsx(tmp_path / "d.xlsx", rows, extra_cells=[("XFD1048576", s("stray"))],
                          dimension=dimension)
    result = assert_agree(path, DOCTORS)  # fastexcel/calamine would abort the process here
    assert result["cells"] == [["1", "A", None, 2], ["2", "B", "x", 3]]
    assert "stray far cell" in caplog.text or "fastexcel" not in READERS


def test_oversized_sheet_xml_is_an_input_error(tmp_path, monkeypatch):
    path = write_raw_xlsx(tmp_path / "d.xlsx", [header(DOCTORS), [n(1), inline("A" * 5000), None]])
    monkeypatch.setenv("ETL_MAX_SHEET_XML_BYTES", "4096")
    result = assert_agree(path, DOCTORS)
    assert result[0] == "InputFileError" and "ETL_MAX_SHEET_XML_BYTES" in result[1]


# --- Hypothesis: random mixes of the hostile cells and layouts ---------------------------------

cells = st.one_of(st.none(), st.sampled_from(HOSTILE_CELLS), st.integers(1, 300).map(n),
                  st.sampled_from(["confirmed", "Cancelled", "Dr. A", "10/22/2025"]).map(s))


@st.composite
def workbooks(draw: Any) -> tuple:
    columns = draw(st.sampled_from([DOCTORS, APPOINTMENTS]))
    order = draw(st.permutations(list(columns)))
    body = draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns) + 1), min_size=1, max_size=8))
    titles = draw(st.lists(st.one_of(st.none(), st.just([s("Export")]), st.just([date_cell(45950)])), max_size=3))
    first_row = draw(st.integers(1, 3))
    first_column = draw(st.integers(0, 2))
    far = draw(st.sampled_from([(), (("AZ40", s("far")),), (("C200", empty()),)]))
    return columns, [*titles, [s(name) for name in order], *body], first_row, first_column, far


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(workbooks())
def test_random_workbooks_read_the_same_everywhere(tmp_path, book):
    columns, rows, first_row, first_column, far = book
    path = write_raw_xlsx(tmp_path / "h.xlsx", rows, first_row=first_row, first_column=first_column, extra_cells=far)
    assert_agree(path, columns)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(workbooks())
def test_the_full_scan_and_the_literal_scan_agree(tmp_path, book):
    """Differential: the cheap path (literal scan, full scan only on an unexplained trace) reads
    what the reference path (full scan always) reads."""
    columns, rows, first_row, first_column, far = book
    path = write_raw_xlsx(tmp_path / "h.xlsx", rows, first_row=first_row, first_column=first_column, extra_cells=far)
    for reader in READERS:
        cheap = outcome(path, columns, reader)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(extract, "_unexplained_traces", lambda *args: True)
            reference = outcome(path, columns, reader)
        if isinstance(reference, dict):
            assert isinstance(cheap, dict) and cheap["cells"] == reference["cells"], reader
        else:
            assert cheap == reference, reader


def test_plain_data_needs_no_full_scan(tmp_path, monkeypatch):
    rows = [header(APPOINTMENTS), *[[n(i), s(" 34 "), n(1), date_cell(45950.5), s("confirmed")] for i in range(50)],
            [n(60), s("booking_id"), n(1), date_cell(45950.5), s("confirmed")],  # shared string 0: "<v>0</v>"
            [s("3.0"), n(104.5), n(-5), date_cell(-18000), e("#N/A")]]
    path = write_raw_xlsx(tmp_path / "a.xlsx", rows)
    calls = []
    real = extract.full_scan
    monkeypatch.setattr(extract, "full_scan", lambda *args: (calls.append(args), real(*args))[1])
    assert_agree(path, APPOINTMENTS)
    assert len(calls) == int("calamine" in READERS)  # calamine always takes the full scan


def test_damaged_deflate_stream_is_an_input_error(tmp_path):
    import zipfile

    rows = [header(DOCTORS), *[[n(i), inline(f"Dr {i}"), None] for i in range(1, 2000)]]
    path = write_raw_xlsx(tmp_path / "d.xlsx", rows)
    data = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo("xl/worksheets/sheet1.xml")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 500
    data[start:start + 20] = bytes(byte ^ 0xFF for byte in data[start:start + 20])
    path.write_bytes(bytes(data))
    result = assert_agree(path, DOCTORS)
    assert result[0] == "InputFileError" and "cannot read" in result[1]


def test_the_project_sample_reads_the_same_everywhere(tmp_path):
    """The sample generator's own mess (a date before 1900 in a date cell among it) gave a
    different report per reader before the extractor corrected the readers."""
    from healthtech_etl.sample import write_sample_workbooks

    doctors, appointments = write_sample_workbooks(tmp_path, rows=3000)
    assert isinstance(assert_agree(doctors, DOCTORS), dict)
    result = assert_agree(appointments, APPOINTMENTS)
    out = clean.clean_appointments(result["frame"], list(range(1, 200)), AS_OF)
    assert out.stats["reason:booking_date_out_of_range"] > 0
