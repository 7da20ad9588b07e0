"""COPY encodes every column from the target table's declared type, never from the values: hostile
columns (all empty, all NULL, Unicode, ``\\.`` and ``\\N``, maximal length, dates past 2262) go
through every COPY path (binary and CSV, with and without pyarrow) into all three COPYed tables
and come back exactly."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from helpers import fetch

from healthtech_etl import load
from healthtech_etl.clean import MAX_CELL_CHARS, to_micros
from healthtech_etl.load import COLUMN_TYPES, RunRecord, load_run

# A column that is long forces the CSV path; short columns take the binary one.
PATHS = {"binary": "short", "csv": "long"}

CATALOG_SQL = """
    SELECT c.table_schema || '.' || c.table_name, c.column_name,
           CASE c.data_type WHEN 'bigint' THEN 'int8' WHEN 'integer' THEN 'int4'
                WHEN 'timestamp without time zone' THEN 'timestamp' WHEN 'ARRAY' THEN c.udt_name
                ELSE c.data_type END
    FROM information_schema.columns c WHERE c.table_schema = 'healthtech' ORDER BY 1, c.ordinal_position"""


def run_record(run_id: str) -> RunRecord:
    return RunRecord(run_id=run_id, started_at=dt.datetime.now(dt.timezone.utc), doctors_file="d",
                     doctors_sha256="0", appointments_file="a", appointments_sha256="0", counts={}, metrics={})


def no_appointments() -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series([], dtype="int64"), "patient_id": pd.Series([], dtype="int64"),
                         "doctor_id": pd.Series([], dtype="int64"), "booking_date": pd.Series([], dtype="int64"),
                         "status": pd.Series([], dtype=object)})


def test_declared_types_match_the_catalog(db_config):
    load_run(db_config, run_record("types"), pd.DataFrame({"id": pd.Series([], dtype="int64"), "name": [],
                                                           "specialty": []}), no_appointments(), {}, {})
    catalog = {}
    for table, column, kind in fetch(db_config, CATALOG_SQL):
        catalog.setdefault(table, {})[column] = "text[]" if kind == "_text" else kind
    for table, declared in COLUMN_TYPES.items():
        assert {name: catalog[table][name] for name in declared} == declared


def text_values(kind: str, size: int) -> list:
    if kind == "short":
        return ["Zoë Ø 東京 🙂", "\\.", "\\N", 'a"b,c', "x"][:size]
    long = "é" * (MAX_CELL_CHARS - 1) + "\\"
    return [long, "\\.", "\\N", "line\nbreak", 'quote " ; ,'][:size]


@pytest.mark.parametrize("without_pyarrow", [False, True])
@pytest.mark.parametrize("path", sorted(PATHS))
def test_hostile_columns_through_every_copy_path(db_config, monkeypatch, path, without_pyarrow):
    if without_pyarrow:
        monkeypatch.setattr(load, "_pa", None)
    if path == "csv":
        monkeypatch.setattr(load, "_BINARY_TYPES", ())
    sent = []
    real_send = load._send
    monkeypatch.setattr(load, "_send", lambda connection, target, data: (sent.append(data[0]),
                                                                        real_send(connection, target, data)))
    names = text_values(PATHS[path], 5)
    doctors = pd.DataFrame({"id": np.arange(1, 6, dtype="int64"), "name": names,
                            "specialty": pd.Series([None] * 5, dtype=object)})  # all NULL text
    days = np.array([-25567, 0, 106_751, 2_932_896, 10_957], dtype="int64")  # 1900, 1970, 2262+, 9999-12-31
    appointments = pd.DataFrame({
        "id": np.arange(10, 15, dtype="int64"), "patient_id": np.array([2**53 + 1, 1, 2, 3, 4], dtype="int64"),
        "doctor_id": np.arange(1, 6, dtype="int64"),
        "booking_date": to_micros(days, np.array([0, 1, 86_399, 86_399, 0]), np.array([0, 0, 999_999, 999_999, 1])),
        "status": ["confirmed", "cancelled", "unknown", "unknown", "confirmed"],
    })
    # Rejections: all-empty record ids (None), Unicode and escapes in the raw cells, long reasons.
    rejected = pd.DataFrame({
        "entity": ["doctors"] * 3, "source_row": [2, 3, 4], "record_id": [None, None, None],
        "reasons": ["missing_doctor_id", "invalid_doctor_id;missing_name", "invalid_name"],
        "doctor_id": [None, "\\N", "\\."], "name": [names[0], None, "Zoë"], "specialty": [None, None, None],
    })
    load_run(db_config, run_record(f"p-{path}-{without_pyarrow}"), doctors, appointments, {"doctors": rejected},
             {"doctors": "d.xlsx"})
    assert sent[-1] == "csv"  # the rejections (sent last): text[] and jsonb, CSV by their declared types
    assert set(sent[:-1]) == {path}  # doctors and appointments went the way this case is about
    assert fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id") == [
        [i + 1, name, None] for i, name in enumerate(names)]
    assert fetch(db_config, "SELECT patient_id, booking_date FROM healthtech.appointments ORDER BY id") == [
        [2**53 + 1, dt.datetime(1900, 1, 1)], [1, dt.datetime(1970, 1, 1, 0, 0, 1)],
        [2, dt.datetime(2262, 4, 11, 23, 59, 59, 999999)], [3, dt.datetime(9999, 12, 31, 23, 59, 59, 999999)],
        [4, dt.datetime(2000, 1, 1, 0, 0, 0, 1)]]
    rows = fetch(db_config, "SELECT row_number, record_id, reasons, raw::text FROM healthtech.etl_rejections "
                            "ORDER BY row_number")
    assert [row[:3] for row in rows] == [[2, None, ["missing_doctor_id"]],
                                         [3, None, ["invalid_doctor_id", "missing_name"]], [4, None, ["invalid_name"]]]
    assert [json.loads(row[3]) for row in rows] == [
        {"doctor_id": None, "name": names[0], "specialty": None},
        {"doctor_id": "\\N", "name": None, "specialty": None},
        {"doctor_id": "\\.", "name": "Zoë", "specialty": None}]


@pytest.mark.parametrize("without_pyarrow", [False, True])
def test_all_empty_and_all_null_columns(db_config, monkeypatch, without_pyarrow):
    """The original bug: an all-empty record_id made text[]/jsonb go out as plain text (22P03)."""
    if without_pyarrow:
        monkeypatch.setattr(load, "_pa", None)
    doctors = pd.DataFrame({"id": np.array([7], dtype="int64"), "name": ["A"], "specialty": [None]})
    appointments = pd.DataFrame({"id": pd.Series([], dtype="int64"), "patient_id": pd.Series([], dtype="int64"),
                                 "doctor_id": pd.Series([], dtype="int64"),
                                 "booking_date": pd.Series([], dtype="int64"), "status": pd.Series([], dtype=object)})
    rejected = pd.DataFrame({"entity": ["doctors"], "source_row": [3], "record_id": [None],
                             "reasons": ["missing_doctor_id"], "doctor_id": [None], "name": ["B"],
                             "specialty": [None]})
    load_run(db_config, run_record(f"e-{without_pyarrow}"), doctors, appointments, {"doctors": rejected},
             {"doctors": "d.xlsx"})
    assert fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors") == [[7, "A", None]]
    assert fetch(db_config, "SELECT count(*) FROM healthtech.appointments") == [[0]]
    assert fetch(db_config, "SELECT record_id, reasons FROM healthtech.etl_rejections") == [
        [None, ["missing_doctor_id"]]]


def test_binary_and_csv_encodings_agree_byte_for_byte_on_content(db_config, monkeypatch):
    """Differential: the same frame through CSV (pyarrow and pure Python) and binary lands the
    same rows."""
    frame = pd.DataFrame({"id": np.array([1, 2, 3], dtype="int64"), "name": ["é", "\\.", "x" * 60],
                          "specialty": [None, "", "Cardio"]})
    results = []
    for mode in ("binary", "csv-arrow", "csv-python"):
        if mode == "csv-python":
            monkeypatch.setattr(load, "_pa", None)
        monkeypatch.setattr(load, "_BINARY_TYPES", ("int8", "timestamp", "text") if mode == "binary" else ())
        empty = pd.DataFrame({"id": pd.Series([], dtype="int64"), "patient_id": pd.Series([], dtype="int64"),
                              "doctor_id": pd.Series([], dtype="int64"), "booking_date": pd.Series([], dtype="int64"),
                              "status": pd.Series([], dtype=object)})
        load_run(db_config, run_record(f"d-{mode}"), frame, empty, {}, {})
        results.append(fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id"))
        monkeypatch.undo()
    assert results[0] == results[1] == results[2] == [[1, "é", None], [2, "\\.", None], [3, "x" * 60, "Cardio"]]
