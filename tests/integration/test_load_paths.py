"""The bulk-load index rebuild keeps the schema exactly as it was and still rolls back on failure;
text that CSV would have to quote, and ids past 2^53, land exactly."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from helpers import AS_OF, SCHEMA_SQL, fetch, snapshot

from healthtech_etl import bulk
from healthtech_etl.errors import DatabaseError
from healthtech_etl.load import RunRecord, load_run


def etl(run_cli, inputs, *extra):
    doctors, appointments = inputs
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
                   *extra) == 0


def test_index_rebuild_keeps_schema_and_rows(run_cli, sample_inputs, db_config, monkeypatch):
    etl(run_cli, sample_inputs)  # small load: indexes maintained row by row
    schema_before, rows_before = fetch(db_config, SCHEMA_SQL), snapshot(db_config)
    assert any("PRIMARY KEY" in definition for _, definition in schema_before)
    assert any("FOREIGN KEY" in definition for _, definition in schema_before)
    monkeypatch.setattr(bulk, "REBUILD_MIN_ROWS", 0)  # force the bulk path on the small data
    etl(run_cli, sample_inputs)
    assert fetch(db_config, SCHEMA_SQL) == schema_before
    after = snapshot(db_config)
    assert after["doctors"] == rows_before["doctors"] and after["appointments"] == rows_before["appointments"]


def run_record(run_id):
    return RunRecord(run_id=run_id, started_at=dt.datetime.now(dt.timezone.utc), doctors_file="d",
                     doctors_sha256="0", appointments_file="a", appointments_sha256="0", counts={}, metrics={})


@pytest.mark.parametrize("rebuild_from", [0, 10**9])
def test_constraint_violation_rolls_back_with_or_without_rebuild(run_cli, sample_inputs, db_config, monkeypatch,
                                                                 rebuild_from):
    etl(run_cli, sample_inputs)
    before = snapshot(db_config)
    monkeypatch.setattr(bulk, "REBUILD_MIN_ROWS", rebuild_from)
    doctors = pd.DataFrame({"id": [1], "name": ["Dr. A"], "specialty": [None]})
    orphan = pd.DataFrame({"id": [1, 2], "patient_id": [5, 6], "doctor_id": [1, 777],
                           "booking_date": pd.to_datetime(["2025-10-01", "2025-10-02"]),
                           "status": ["confirmed", "cancelled"]})
    with pytest.raises(DatabaseError, match="rolled back"):
        load_run(db_config, run_record("x1"), doctors, orphan, {}, {})
    assert snapshot(db_config) == before
    assert fetch(db_config, SCHEMA_SQL)  # constraints and indexes still there


def test_text_that_needs_quoting_elsewhere_lands_intact(db_config):
    long_name = 'Dr. "Bob", Jr. ' + "é" * 80
    doctors = pd.DataFrame({"id": [1, 2], "name": [long_name, "Dr. ;,\\N"], "specialty": ["A,B", None]})
    appointments = pd.DataFrame({"id": [10], "patient_id": [5], "doctor_id": [2],
                                 "booking_date": pd.to_datetime(["2025-10-01 10:11:12.345678"]),
                                 "status": ["confirmed"]})
    load_run(db_config, run_record("x2"), doctors, appointments, {}, {})
    assert fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id") == [
        [1, long_name, "A,B"], [2, "Dr. ;,\\N", None]]
    assert fetch(db_config, "SELECT booking_date FROM healthtech.appointments") == [
        [dt.datetime(2025, 10, 1, 10, 11, 12, 345678)]]


def test_big_ids_stay_exact(db_config):
    big = 2**53 + 1
    doctors = pd.DataFrame({"id": np.array([big], dtype="int64"), "name": ["Dr. Big"], "specialty": [None]})
    appointments = pd.DataFrame({"id": np.array([big + 2], dtype="int64"), "patient_id": [big + 4],
                                 "doctor_id": [big], "booking_date": pd.to_datetime(["2025-10-01"]),
                                 "status": ["unknown"]})
    load_run(db_config, run_record("x3"), doctors, appointments, {}, {})
    assert fetch(db_config, "SELECT id, patient_id, doctor_id FROM healthtech.appointments") == [
        [big + 2, big + 4, big]]
