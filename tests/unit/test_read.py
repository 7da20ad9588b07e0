"""The one reader: python-calamine behind the guard, on real workbooks (openpyxl- and raw-written)."""

import datetime as dt
import logging

import pytest
from raw_xlsx import b, date, e, empty, inline, n, s, stream_into, write_raw_xlsx

from healthtech_etl import read
from healthtech_etl.cells import NOT_A_VALUE, cell_text
from healthtech_etl.errors import ConfigError, InputFileError
from healthtech_etl.read import normalize_header, read_sheet

COLUMNS = ("booking_id", "booking_date")


@pytest.mark.parametrize("raw, expected", [(" Booking_ID ", "booking_id"), ("Booking ID", "booking_id"),
                                           ("DOCTOR_ID", "doctor_id"), ("  name\t", "name"), (None, "")])
def test_header_normalisation(raw, expected):
    assert normalize_header(raw) == expected


def test_cells_are_handed_over_typed_with_the_sheets_row_numbers(make_xlsx):
    rows = [(1, dt.datetime(2025, 10, 21, 10, 30)), ("104.0", 45950.5), ("37X", "10/21/2025"),
            (True, dt.date(2025, 1, 2)), (104.5, None)]
    sheet = read_sheet(make_xlsx("mixed.xlsx", [" Booking_ID", "BOOKING DATE ", "Notes"],
                                 [r + ("x",) for r in rows]), COLUMNS)
    frame = sheet.frame
    assert list(frame.columns) == ["booking_id", "booking_date", "source_row"]
    assert frame["booking_id"].tolist() == [1.0, "104.0", "37X", True, 104.5]
    assert frame["booking_date"].tolist() == [dt.datetime(2025, 10, 21, 10, 30), 45950.5, "10/21/2025",
                                              dt.date(2025, 1, 2), ""]
    assert frame["source_row"].tolist() == [2, 3, 4, 5, 6]
    assert sheet.extra_columns == ["Notes"] and sheet.reader.startswith("python-calamine")


def test_title_rows_above_the_header_are_skipped_and_counted(tmp_path):
    path = write_raw_xlsx(tmp_path / "t.xlsx", [[s("Bookings export")], [s("2025-11-01")], [],
                                                [s("booking_id"), s("booking_date")], [n(7), s("x")]],
                          first_column=2)
    sheet = read_sheet(path, COLUMNS)
    assert sheet.skipped_header_rows == 3
    assert sheet.frame["source_row"].tolist() == [5] and sheet.frame["booking_id"].tolist() == [7.0]


def test_blank_rows_are_skipped_and_counted(make_xlsx):
    rows = [(1, "2025-01-01"), (None, None), (2, "2025-01-02"), (None, None)]
    sheet = read_sheet(make_xlsx("blank.xlsx", COLUMNS, rows), COLUMNS)
    assert sheet.frame["booking_id"].tolist() == [1.0, 2.0]
    assert sheet.frame["source_row"].tolist() == [2, 4]
    assert sheet.blank_rows == 1  # the blank row after the last record is not counted


def test_empty_cells_and_error_cells_are_none(tmp_path):
    path = write_raw_xlsx(tmp_path / "e.xlsx", [[s("booking_id"), s("booking_date")],
                                                [e("#N/A"), s("x")], [n(1), empty()], [inline(""), b(False)],
                                                [e("#DIV/0!"), s("")]])
    sheet = read_sheet(path, COLUMNS)
    assert sheet.frame["booking_id"].tolist() == ["", 1.0, ""]
    assert sheet.frame["booking_date"].tolist() == ["x", "", False]
    assert sheet.blank_rows == 0  # the last row, error and empty text only, reads as blank


def test_a_date_past_9999_loses_only_its_row(tmp_path):
    path = write_raw_xlsx(tmp_path / "far.xlsx", [[s("booking_id"), s("booking_date")], [n(1), date(45000)],
                                                  [n(2), date(3_000_000)], [n(3), date(45001)]])
    sheet = read_sheet(path, COLUMNS)
    assert sheet.unreadable == [3]
    assert sheet.frame["source_row"].tolist() == [2, 3, 4]
    assert sheet.frame["booking_id"].tolist() == [1.0, "", 3.0]


def test_rows_written_out_of_order_are_read_at_their_references(tmp_path, caplog, monkeypatch):
    path = write_raw_xlsx(tmp_path / "o.xlsx", [[s("booking_id"), s("booking_date")], [n(1), s("a")],
                                                [n(2), s("b")], [n(3), s("c")]])
    # Row 4 first, then the header row 1: calamine alone would keep rows 4..3 and drop the rest.
    stream_into(path, "xl/worksheets/sheet1.xml", b'<row r="1">', [b'<row r="4"><c r="A4"><v>3</v></c></row>',
                                                                   b'<row r="1">'])
    stream_into(path, "xl/worksheets/sheet1.xml", b'<row r="4"><c r="A4"><v>3</v></c><c r="B4" t="s"><v>',
                [b'<row r="99"><c r="A99" t="s"><v>'])
    monkeypatch.setattr(logging.getLogger("healthtech_etl"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="healthtech_etl"):
        sheet = read_sheet(path, COLUMNS)
    assert sheet.frame["booking_id"].tolist() == [1.0, 2.0, 3.0, "c"]
    assert sheet.frame["source_row"].tolist() == [2, 3, 4, 99]
    assert "out of order" in caplog.text


def test_a_cell_out_of_column_order_is_read(tmp_path):
    path = write_raw_xlsx(tmp_path / "c.xlsx", [[s("booking_id"), s("booking_date")], [n(1), s("a")]])
    stream_into(path, "xl/worksheets/sheet1.xml", b'<c r="A2"><v>1</v></c><c r="B2" t="s"><v>2</v></c>',
                [b'<c r="B2" t="s"><v>2</v></c><c r="A2"><v>1</v></c>'])
    frame = read_sheet(path, COLUMNS).frame
    assert frame["booking_id"].tolist() == [1.0] and frame["booking_date"].tolist() == ["a"]


def test_missing_mandatory_column_is_critical(make_xlsx):
    path = make_xlsx("nocol.xlsx", ["booking_id", "something"], [(1, 2)])
    with pytest.raises(InputFileError, match="lacks mandatory column.*booking_date"):
        read_sheet(path, COLUMNS, entity="appointments")


def test_empty_workbook_and_header_only_are_critical(make_xlsx):
    with pytest.raises(InputFileError, match="is empty"):
        read_sheet(make_xlsx("empty.xlsx", None, []), COLUMNS)
    with pytest.raises(InputFileError, match="no data rows"):
        read_sheet(make_xlsx("header.xlsx", COLUMNS, []), COLUMNS)


@pytest.mark.parametrize("content", [b"PK\x03\x04 this is not really a zip", b"not a zip at all", b""])
def test_corrupt_file_is_critical(tmp_path, content):
    path = tmp_path / "corrupt.xlsx"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match="not an .xlsx workbook"):
        read_sheet(path, COLUMNS)


def test_missing_file_is_critical(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_sheet(tmp_path / "nope.xlsx", COLUMNS)


def test_named_sheet(make_xlsx):
    path = make_xlsx("sheets.xlsx", ["other"], [("x",)], extra_sheets=["Bookings"])
    import openpyxl

    workbook = openpyxl.load_workbook(path)
    workbook["Bookings"].append(list(COLUMNS))
    workbook["Bookings"].append([5, "2025-01-01"])
    workbook.save(path)
    assert read_sheet(path, COLUMNS, sheet="Bookings").frame["booking_id"].tolist() == [5.0]
    with pytest.raises(InputFileError, match=r"sheet 'Missing' not found \(sheets: 'Sheet1', 'Bookings'\)"):
        read_sheet(path, COLUMNS, sheet="Missing")


def test_extra_columns_are_logged(make_xlsx, caplog, monkeypatch):
    path = make_xlsx("extra.xlsx", list(COLUMNS) + ["Comment"], [(1, "2025-01-01", "hi")])
    monkeypatch.setattr(logging.getLogger("healthtech_etl"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="healthtech_etl"):
        read_sheet(path, COLUMNS, entity="appointments")
    assert "ignoring extra column(s) Comment" in caplog.text


def test_another_calamine_release_is_refused(monkeypatch):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.9.1")
    with pytest.raises(ConfigError, match="python-calamine 0.9.1 is installed; this release reads with 0.4"):
        read.calamine()


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("a", "a"), ("a_x000D_b", "a\rb"), ("a_x005F_x000D_b", "a_x000D_b"),
    (3.0, "3"), (0.5, "0.5"), (-2.0, "-2"), (2.0**53 - 1, "9007199254740991"), (2.0**53, NOT_A_VALUE + "9007199254740992.0"),
    (float("nan"), None), (False, NOT_A_VALUE + "FALSE"), (dt.datetime(2025, 1, 2, 3, 4, 5), "2025-01-02 03:04:05"),
    (dt.datetime(2025, 1, 2, 3, 4, 5, 500000), "2025-01-02 03:04:05.500000"), (dt.date(2025, 1, 2), "2025-01-02 00:00:00"),
    (dt.time(12, 0), NOT_A_VALUE + "12:00:00"), (dt.timedelta(hours=30), NOT_A_VALUE + "1 day, 6:00:00"),
])
def test_cell_text(value, expected):
    assert cell_text(value) == expected
