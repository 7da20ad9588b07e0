"""Binary COPY encodes every column from the target table's declared type, never from the values:
hostile columns (all empty, all NULL, Unicode, ``\\.`` and ``\\N``, maximal length, line and
paragraph separators, dates past 2262 and before 1970) go into all three COPYed tables and come
back exactly, in chunks split or not."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from helpers import fetch

from healthtech_etl import copy_data
from healthtech_etl.load import RunRecord, load_run

MAX_CELL_CHARS = 32_767  # Excel's limit: the longest cell text a workbook can carry
LONG = "é" * (MAX_CELL_CHARS - 1) + "\\"
HOSTILE = ["Zoë Ø 東京 🙂", "\\.", "\\N", 'a"b,c\n;', "p\u2028q\x85r\u2029"]


def run_record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, started_at=dt.datetime.now(dt.timezone.utc), doctors_file="d",
                     doctors_sha256="0", appointments_file="a", appointments_sha256="0", counts={}, metrics={})


def micros(*args: int) -> int:
    """Unix microseconds of a naive datetime (any year 1-9999), as the cleaner carries them."""
    delta = dt.datetime(*args) - dt.datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def no_appointments() -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series([], dtype="int64"), "patient_id": pd.Series([], dtype="int64"),
                         "doctor_id": pd.Series([], dtype="int64"), "booking_date": pd.Series([], dtype="int64"),
                         "status": pd.Series([], dtype=object)})


DATES = [dt.datetime(1900, 1, 1), dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(2262, 4, 11, 23, 59, 59, 999999),
         dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.datetime(2000, 1, 1, 0, 0, 0, 1)]


@pytest.mark.parametrize("chunk_bytes", [copy_data.CHUNK_BYTES, 1])  # 1: every row a chunk of its own
def test_hostile_columns_come_back_exactly(db_config, monkeypatch, chunk_bytes):
    monkeypatch.setattr(copy_data, "CHUNK_BYTES", chunk_bytes)
    names = [LONG, *HOSTILE]
    doctors = pd.DataFrame({"id": np.arange(1, 7, dtype="int64"), "name": names,
                            "specialty": pd.Series([None] * 6, dtype=object)})  # all NULL text
    appointments = pd.DataFrame({
        "id": np.arange(10, 15, dtype="int64"), "patient_id": np.array([2**53 + 1, 1, 2, 3, 2**63 - 1], dtype="int64"),
        "doctor_id": np.arange(1, 6, dtype="int64"),
        "booking_date": np.array([micros(*d.timetuple()[:6], d.microsecond) for d in DATES], dtype="int64"),
        "status": ["confirmed", "cancelled", "unknown", "unknown", "confirmed"],
    })
    # Rejections: all-empty record ids (None), hostile and maximal raw cells, several reasons.
    rejected = pd.DataFrame({
        "entity": ["doctors"] * 4, "source_row": [2, 3, 4, 1_048_576], "record_id": [None] * 4,
        "reasons": ["missing_doctor_id", "invalid_doctor_id;missing_name", "invalid_name", "duplicate_row"],
        "doctor_id": [None, "\\N", "\\.", "1"], "name": [LONG, None, HOSTILE[4], HOSTILE[3]],
        "specialty": [None, None, None, HOSTILE[0]],
    })
    load_run(db_config, run_record(f"h-{chunk_bytes}"), doctors, appointments, {"doctors": rejected},
             {"doctors": "d.xlsx"})

    assert fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id") == [
        [i + 1, name, None] for i, name in enumerate(names)]
    assert fetch(db_config, "SELECT patient_id, booking_date FROM healthtech.appointments ORDER BY id") == [
        [patient, when] for patient, when in zip([2**53 + 1, 1, 2, 3, 2**63 - 1], DATES)]
    rows = fetch(db_config, "SELECT row_number, record_id, reasons, raw::text, source_file, entity "
                            "FROM healthtech.etl_rejections ORDER BY row_number")
    assert [row[:3] for row in rows] == [
        [2, None, ["missing_doctor_id"]], [3, None, ["invalid_doctor_id", "missing_name"]],
        [4, None, ["invalid_name"]], [1_048_576, None, ["duplicate_row"]]]
    assert [json.loads(row[3]) for row in rows] == [
        {"doctor_id": None, "name": LONG, "specialty": None},
        {"doctor_id": "\\N", "name": None, "specialty": None},
        {"doctor_id": "\\.", "name": HOSTILE[4], "specialty": None},
        {"doctor_id": "1", "name": HOSTILE[3], "specialty": HOSTILE[0]}]
    assert {(row[4], row[5]) for row in rows} == {("d.xlsx", "doctors")}


def test_all_empty_and_all_null_columns(db_config):
    """The original bug: an all-empty record_id made text[]/jsonb go out as plain text (22P03).
    Empty text is NULL (an empty cell is no value)."""
    doctors = pd.DataFrame({"id": np.array([7, 8], dtype="int64"), "name": ["A", "B"], "specialty": ["", None]})
    rejected = pd.DataFrame({"entity": ["doctors"], "source_row": [3], "record_id": [None],
                             "reasons": ["missing_doctor_id"], "doctor_id": [None], "name": ["B"],
                             "specialty": [None]})
    load_run(db_config, run_record("e"), doctors, no_appointments(), {"doctors": rejected}, {"doctors": "d.xlsx"})
    assert fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id") == [
        [7, "A", None], [8, "B", None]]
    assert fetch(db_config, "SELECT count(*) FROM healthtech.appointments") == [[0]]
    assert fetch(db_config, "SELECT record_id, reasons FROM healthtech.etl_rejections") == [
        [None, ["missing_doctor_id"]]]


def test_record_ids_partly_null_and_datetime64_dates(db_config):
    rejected = pd.DataFrame({"entity": ["appointments"] * 3, "source_row": [2, 3, 4], "record_id": [5, None, 2**62],
                             "reasons": ["unknown_doctor"] * 3, "booking_id": ["5", "x", str(2**62)]})
    appointments = pd.DataFrame({"id": [1, 2], "patient_id": [3, 4], "doctor_id": [9, 9],
                                 "booking_date": pd.to_datetime(["1969-12-31 23:59:59.999999", "2025-10-01 10:11:12.000000"]),
                                 "status": ["confirmed", "unknown"]})
    doctors = pd.DataFrame({"id": [9], "name": ["Dr. Nine"], "specialty": ["Cardiology"]})
    load_run(db_config, run_record("n"), doctors, appointments, {"appointments": rejected},
             {"appointments": "a.xlsx"})
    assert fetch(db_config, "SELECT record_id FROM healthtech.etl_rejections ORDER BY row_number") == [
        [5], [None], [2**62]]
    assert fetch(db_config, "SELECT booking_date FROM healthtech.appointments ORDER BY id") == [
        [dt.datetime(1969, 12, 31, 23, 59, 59, 999999)], [dt.datetime(2025, 10, 1, 10, 11, 12)]]


def test_the_encoding_is_postgresqls_binary_format():
    """Byte for byte, as PostgreSQL documents it (header, field count, lengths, big-endian
    values, -1 for NULL, timestamps from 2000-01-01, arrays with their element type)."""
    frame = pd.DataFrame({"n": pd.Series([1, None], dtype=object), "t": ["ab", ""],
                          "d": [micros(2000, 1, 1), micros(2000, 1, 1, 0, 0, 1)],
                          "a": [("x",), ()], "j": ['{"k":1}', "{}"]})
    data = b"".join(bytes(memoryview(chunk).cast("B"))
                    for chunk in copy_data.copy_chunks(frame, ["integer", "text", "timestamp", "text[]", "jsonb"]))

    def field(payload: bytes) -> bytes:
        return len(payload).to_bytes(4, "big") + payload

    empty_array = (0).to_bytes(4, "big") * 2 + (25).to_bytes(4, "big")
    array = b"".join(n.to_bytes(4, "big") for n in (1, 0, 25, 1, 1)) + field(b"x")
    assert data == (
        b"PGCOPY\n\xff\r\n\x00" + bytes(8)
        + (5).to_bytes(2, "big") + field((1).to_bytes(4, "big")) + field(b"ab") + field(bytes(8)) + field(array)
        + field(b'\x01{"k":1}')
        + (5).to_bytes(2, "big") + b"\xff\xff\xff\xff" + b"\xff\xff\xff\xff" + field((1_000_000).to_bytes(8, "big"))
        + field(empty_array) + field(b"\x01{}")
        + b"\xff\xff")


def test_values_that_do_not_fit_the_declared_type_are_refused():
    with pytest.raises(TypeError, match="a text column holds a int"):
        list(copy_data.copy_chunks(pd.DataFrame({"t": [1]}), ["text"]))
    with pytest.raises(TypeError, match="timestamp column must be int64 microseconds or datetime64"):
        list(copy_data.copy_chunks(pd.DataFrame({"d": ["2025-10-01"]}), ["timestamp"]))
    with pytest.raises(ValueError, match="2 columns for 1 declared types"):
        list(copy_data.copy_chunks(pd.DataFrame({"a": [1], "b": [2]}), ["bigint"]))
