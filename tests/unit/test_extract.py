import datetime as dt
import logging

import pandas as pd
import pytest

from healthtech_etl.errors import InputFileError
from healthtech_etl.extract import available_readers, cell_text, normalize_header, read_sheet
from healthtech_etl.sheet_scan import NOT_A_VALUE

COLUMNS = ("booking_id", "booking_date")
READERS = available_readers()


def test_openpyxl_is_always_available():
    assert "openpyxl" in READERS


@pytest.mark.parametrize("raw, expected", [(" Booking_ID ", "booking_id"), ("Booking ID", "booking_id"),
                                           ("DOCTOR_ID", "doctor_id"), ("  name\t", "name"), (None, "")])
def test_header_normalisation(raw, expected):
    assert normalize_header(raw) == expected


MIXED_ROWS = [
    (1, dt.datetime(2025, 10, 21, 10, 30)),
    (2.0, dt.datetime(2300, 1, 1)),
    ("104.0", 45950),
    (" 34 ", 45950.5),
    ("37X", "10/21/2025"),
    (True, dt.date(2025, 1, 2)),
    (12345678901234, "2025-10-21T10:00:00"),
    (104.5, None),
]
EXPECTED_TEXT = [
    ("1", "2025-10-21 10:30:00"),
    ("2", "2300-01-01 00:00:00"),
    ("104.0", "45950"),
    (" 34 ", "45950.5"),
    ("37X", "10/21/2025"),
    (NOT_A_VALUE + "true", "2025-01-02 00:00:00"),  # a boolean is no id: marked, rejected later
    ("12345678901234", "2025-10-21T10:00:00"),
    ("104.5", None),
]


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_renders_cells_identically(make_xlsx, reader):
    path = make_xlsx("mixed.xlsx", [" Booking_ID", "BOOKING DATE ", "Notes"], [r + ("x",) for r in MIXED_ROWS])
    sheet = read_sheet(path, COLUMNS, reader=reader)
    frame = sheet.frame
    assert list(frame.columns) == ["booking_id", "booking_date", "source_row"]
    assert [tuple(None if v is None else v for v in row) for row in frame[list(COLUMNS)].itertuples(index=False)] \
        == EXPECTED_TEXT
    assert frame["source_row"].tolist() == list(range(2, 2 + len(MIXED_ROWS)))
    assert sheet.extra_columns == ["Notes"]
    assert sheet.reader == reader


@pytest.mark.parametrize("reader", READERS)
def test_junk_after_many_numbers_is_kept_as_text(make_xlsx, reader):
    """Type inference from the first rows would turn '37X' into null; we keep the text."""
    rows = [(i, "2025-01-01") for i in range(1, 2001)] + [("37X", "2025-01-01")]
    frame = read_sheet(make_xlsx("late_junk.xlsx", COLUMNS, rows), COLUMNS, reader=reader).frame
    assert frame["booking_id"].iloc[-1] == "37X"
    assert frame["source_row"].iloc[-1] == 2002


@pytest.mark.parametrize("reader", READERS)
def test_blank_rows_are_skipped_and_counted(make_xlsx, reader):
    rows = [(1, "2025-01-01"), (None, None), (2, "2025-01-02")]
    sheet = read_sheet(make_xlsx("blank.xlsx", COLUMNS, rows), COLUMNS, reader=reader)
    assert sheet.frame["booking_id"].tolist() == ["1", "2"]
    assert sheet.frame["source_row"].tolist() == [2, 4]
    assert sheet.blank_rows == 1


@pytest.mark.parametrize("reader", READERS)
def test_missing_mandatory_column_is_critical(make_xlsx, reader):
    path = make_xlsx("nocol.xlsx", ["booking_id", "something"], [(1, 2)])
    with pytest.raises(InputFileError, match="lacks mandatory column.*booking_date"):
        read_sheet(path, COLUMNS, reader=reader, entity="appointments")


@pytest.mark.parametrize("reader", READERS)
def test_empty_workbook_is_critical(make_xlsx, reader):
    path = make_xlsx("empty.xlsx", None, [])
    with pytest.raises(InputFileError, match="empty|no data|cannot read"):
        read_sheet(path, COLUMNS, reader=reader)


@pytest.mark.parametrize("reader", READERS)
def test_header_only_is_critical(make_xlsx, reader):
    with pytest.raises(InputFileError, match="no data rows"):
        read_sheet(make_xlsx("header.xlsx", COLUMNS, []), COLUMNS, reader=reader)


@pytest.mark.parametrize("reader", READERS)
def test_corrupt_file_is_critical(tmp_path, reader):
    path = tmp_path / "corrupt.xlsx"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(InputFileError, match="cannot read"):
        read_sheet(path, COLUMNS, reader=reader)


def test_missing_file_is_critical(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_sheet(tmp_path / "nope.xlsx", COLUMNS)


@pytest.mark.parametrize("reader", READERS)
def test_named_sheet(make_xlsx, tmp_path, reader):
    import openpyxl

    path = make_xlsx("sheets.xlsx", ["other"], [("x",)])
    workbook = openpyxl.load_workbook(path)
    data = workbook.create_sheet("Bookings")
    data.append(list(COLUMNS))
    data.append([5, "2025-01-01"])
    workbook.save(path)
    assert read_sheet(path, COLUMNS, sheet="Bookings", reader=reader).frame["booking_id"].tolist() == ["5"]
    with pytest.raises(InputFileError, match="no sheet 'Missing'"):
        read_sheet(path, COLUMNS, sheet="Missing", reader=reader)


def test_extra_columns_are_logged(make_xlsx, caplog, monkeypatch):
    path = make_xlsx("extra.xlsx", list(COLUMNS) + ["Comment"], [(1, "2025-01-01", "hi")])
    monkeypatch.setattr(logging.getLogger("healthtech_etl"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="healthtech_etl"):
        read_sheet(path, COLUMNS, entity="appointments")
    assert "ignoring extra column(s) Comment" in caplog.text


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("a", "a"), (3, "3"), (3.0, "3"), (0.5, "0.5"),
                                             (False, "false"), (dt.datetime(2025, 1, 2, 3, 4, 5), "2025-01-02 03:04:05"),
                                             (dt.date(2025, 1, 2), "2025-01-02 00:00:00"), (float("nan"), None)])
def test_cell_text(value, expected):
    assert cell_text(value) == expected


@pytest.mark.skipif("fastexcel" not in READERS, reason="fastexcel not installed (the Glue runtime has none)")
def test_reader_grouping_is_only_a_speed_up(make_xlsx):
    from healthtech_etl.clean import clean_appointments

    header = ("booking_id", "patient_id", "doctor_id", "booking_date", "status")
    rows = [(1, 34, 1, "10/21/2025", "confirmed"), (2, None, 1, "bad", "x"), (1, 34, 1, "10/21/2025", "confirmed"),
            (None, None, None, None, None), ("3", " 7 ", 2, dt.datetime(2025, 10, 1), "Cancelled")]
    sheet = read_sheet(make_xlsx("a.xlsx", header, rows), header, reader="fastexcel")
    assert set(sheet.encoded) == set(header)
    for name, (codes, distinct) in sheet.encoded.items():
        assert list(distinct[codes]) == sheet.frame[name].tolist()
    kwargs = {"known_doctor_ids": [1, 2], "as_of": dt.date(2025, 11, 1)}
    fast = clean_appointments(sheet.frame, encoded=sheet.encoded, **kwargs)
    plain = clean_appointments(sheet.frame, **kwargs)
    pd.testing.assert_frame_equal(fast.valid, plain.valid)
    pd.testing.assert_frame_equal(fast.rejected, plain.rejected)
    assert fast.stats == plain.stats
