"""schema.py is the one declaration: after a load the catalog holds exactly its tables, columns,
types, NOT NULLs, keys and indexes (also in a database created by an earlier release); COPY
encodes every column by its declared type; the merge's staging tables and the ledger's queries
follow it."""

import dataclasses
import datetime as dt

import pandas as pd
import pytest
from helpers import fetch

from healthtech_etl import copy_data, schema
from healthtech_etl.db import connect
from healthtech_etl.history import REPORTS_DDL, list_runs, rejected_rows
from healthtech_etl.load import RunRecord, ensure_schema, load_run, rejections_for_copy
from healthtech_etl.merge import STAGED

COLUMNS_SQL = """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = 'healthtech' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
    ORDER BY c.relname, a.attnum"""
KEYS_SQL = """
    SELECT c.relname, array_agg(a.attname ORDER BY k.ord)
    FROM pg_constraint p JOIN pg_class c ON c.oid = p.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN unnest(p.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = p.conrelid AND a.attnum = k.attnum
    WHERE n.nspname = 'healthtech' AND p.contype = 'p' GROUP BY c.relname ORDER BY 1"""
# Everything that defines the schema's behaviour, by name (what a dump would show).
DEFINITIONS_SQL = """
    SELECT c.relname, p.conname, pg_get_constraintdef(p.oid)
    FROM pg_constraint p JOIN pg_class c ON c.oid = p.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'healthtech'
    UNION ALL SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'healthtech'
    ORDER BY 1, 2, 3"""

# The DDL of the previous release (hand-written then; kept here as it was): a database it created
# must end up exactly like one created from the declaration.
PREVIOUS_RELEASE_DDL = """
CREATE SCHEMA IF NOT EXISTS healthtech;
CREATE TABLE IF NOT EXISTS healthtech.doctors (id bigint PRIMARY KEY, name text NOT NULL, specialty text);
CREATE TABLE IF NOT EXISTS healthtech.appointments (
    id bigint PRIMARY KEY, patient_id bigint NOT NULL, doctor_id bigint NOT NULL REFERENCES healthtech.doctors (id),
    booking_date timestamp NOT NULL,
    status text NOT NULL CHECK (status IN ('confirmed', 'cancelled', 'unknown')));
CREATE INDEX IF NOT EXISTS appointments_doctor_id_idx ON healthtech.appointments (doctor_id);
CREATE INDEX IF NOT EXISTS appointments_patient_id_idx ON healthtech.appointments (patient_id);
CREATE TABLE IF NOT EXISTS healthtech.etl_runs (
    run_id text PRIMARY KEY, started_at timestamptz NOT NULL, finished_at timestamptz,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    doctors_file text, doctors_sha256 text, appointments_file text, appointments_sha256 text,
    counts jsonb, metrics jsonb, error text);
CREATE TABLE IF NOT EXISTS healthtech.etl_rejections (
    id bigserial PRIMARY KEY, run_id text NOT NULL REFERENCES healthtech.etl_runs (run_id),
    entity text NOT NULL, source_file text NOT NULL, row_number integer NOT NULL, record_id bigint,
    reasons text[] NOT NULL, raw jsonb NOT NULL);
CREATE INDEX IF NOT EXISTS etl_rejections_run_id_idx ON healthtech.etl_rejections (run_id);
CREATE TABLE IF NOT EXISTS healthtech.appointment_history (
    booking_id bigint NOT NULL, patient_id bigint NOT NULL, doctor_id bigint NOT NULL,
    booking_date timestamp NOT NULL, status text NOT NULL, valid_from timestamptz NOT NULL,
    valid_to timestamptz CHECK (valid_to >= valid_from), run_id text NOT NULL,
    PRIMARY KEY (booking_id, valid_from));
CREATE UNIQUE INDEX IF NOT EXISTS appointment_history_open_idx
    ON healthtech.appointment_history (booking_id) WHERE valid_to IS NULL;
CREATE TABLE IF NOT EXISTS healthtech.etl_run_reports (
    run_id text PRIMARY KEY REFERENCES healthtech.etl_runs (run_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(), report jsonb NOT NULL, aggregates jsonb)"""


def run_record(run_id: str, mode: str = "replace") -> RunRecord:
    return RunRecord(run_id=run_id, started_at=dt.datetime.now(dt.timezone.utc), doctors_file="d",
                     doctors_sha256="0", appointments_file="a", appointments_sha256="0", counts={}, metrics={},
                     mode=mode)


def sql_type(connection, declared: str) -> str:
    """The declared type as the catalog names it (bigserial: a bigint with a sequence)."""
    declared = "bigint" if declared == "bigserial" else declared
    return connection.run("SELECT format_type(CAST(:name AS regtype), NULL)", name=declared)[0][0]


def create_everything(db_config) -> None:
    connection = connect(db_config)
    try:
        ensure_schema(connection)
        connection.run(REPORTS_DDL)
    finally:
        connection.close()


def declared_columns(db_config) -> list:
    connection = connect(db_config)
    try:
        return sorted(
            [table.name, column.name, sql_type(connection, column.type), not column.null,
             bool(column.default) or column.type == "bigserial"]
            for table in schema.TABLES for column in table.columns
        )
    finally:
        connection.close()


def test_the_catalog_is_the_declaration(db_config):
    create_everything(db_config)

    catalog = fetch(db_config, COLUMNS_SQL)
    # In the declared order too (what SELECT * and a dump show).
    by_table: dict = {}
    for table, column, *_ in catalog:
        by_table.setdefault(table, []).append(column)
    assert by_table == {table.name: list(table.names) for table in schema.TABLES}
    assert sorted([table, column, kind, not_null, default is not None]
                  for table, column, kind, not_null, default in catalog) == declared_columns(db_config)
    assert fetch(db_config, KEYS_SQL) == sorted([table.name, list(table.key)] for table in schema.TABLES)
    indexes = {name for _, name, _ in fetch(db_config, DEFINITIONS_SQL) if name.endswith("_idx")}
    assert indexes == {index.name for table in schema.TABLES for index in table.indexes}


def test_a_database_created_by_the_previous_release_ends_up_the_same(db_config, pg_server):
    create_everything(db_config)
    fresh = fetch(db_config, COLUMNS_SQL), fetch(db_config, DEFINITIONS_SQL)

    older = pg_server.with_database(f"{db_config.database}_old")
    admin = connect(pg_server)
    try:
        admin.run(f"CREATE DATABASE {older.database}")
    finally:
        admin.close()
    try:
        connection = connect(older)
        try:
            connection.run(PREVIOUS_RELEASE_DDL)
            connection.run("INSERT INTO healthtech.etl_runs (run_id, started_at, status) VALUES ('old', now(), 'succeeded')")
        finally:
            connection.close()
        load_run(older, run_record("new"), pd.DataFrame({"id": [1], "name": ["A"], "specialty": [None]}),
                 pd.DataFrame({"id": [2], "patient_id": [3], "doctor_id": [1],
                               "booking_date": pd.to_datetime(["2025-10-01"]), "status": ["confirmed"]}), {}, {})
        # etl_runs.mode came with merge mode: added to the older ledger, its rows read as replace runs.
        assert (fetch(older, COLUMNS_SQL), fetch(older, DEFINITIONS_SQL)) == fresh
        assert fetch(older, "SELECT run_id, mode FROM healthtech.etl_runs ORDER BY run_id") == [
            ["new", "replace"], ["old", "replace"]]
    finally:
        admin = connect(pg_server)
        try:
            admin.run(f"DROP DATABASE IF EXISTS {older.database} WITH (FORCE)")
        finally:
            admin.close()


@pytest.mark.parametrize("mode", ["replace", "merge"])
def test_every_copy_encodes_the_catalog_types(db_config, monkeypatch, mode):
    """Each COPY of a load (tables, staging tables, rejections) encodes its columns by the
    declared types, which are the catalog's."""
    copies = []
    real_chunks = copy_data.copy_chunks

    def spy(frame, types):
        copies.append((tuple(frame.columns), tuple(types)))
        return real_chunks(frame, types)

    monkeypatch.setattr(copy_data, "copy_chunks", spy)
    monkeypatch.setattr("healthtech_etl.bulk.copy_chunks", spy)
    rejected = pd.DataFrame({"entity": ["doctors"], "source_row": [3], "record_id": [None],
                             "reasons": ["missing_doctor_id"], "doctor_id": [None], "name": ["B"], "specialty": [None]})
    load_run(db_config, run_record(f"copy-{mode}", mode), pd.DataFrame({"id": [7], "name": ["A"], "specialty": [None]}),
             pd.DataFrame({"id": [1], "patient_id": [2], "doctor_id": [7], "booking_date": [0], "status": ["unknown"]}),
             {"doctors": rejected}, {"doctors": "d.xlsx"})

    targets = {table.names if table is not schema.ETL_REJECTIONS else schema.REJECTION_COLUMNS: table
               for table in (schema.DOCTORS, schema.APPOINTMENTS, schema.ETL_REJECTIONS)}
    assert sorted(columns for columns, _ in copies) == sorted(targets)
    connection = connect(db_config)
    try:
        for columns, types in copies:
            table = targets[columns]
            assert types == table.types(columns)
            catalog = dict(connection.run(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = CAST(:table AS regclass) AND attnum > 0", table=table.qualified))
            assert [catalog[name] for name in columns] == [sql_type(connection, kind) for kind in types]
    finally:
        connection.close()


def test_staging_tables_follow_the_declaration(db_config):
    from healthtech_etl.merge import _STAGE_WRITTEN

    create_everything(db_config)
    connection = connect(db_config)
    try:
        connection.run("START TRANSACTION")
        for table in (schema.DOCTORS, schema.APPOINTMENTS):
            connection.run(schema.staging_table(table, STAGED[table.name]))
        connection.run(_STAGE_WRITTEN)
        staged = {}
        for name in (*STAGED.values(), "merge_written"):
            staged[name] = [tuple(row) for row in connection.run(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
                " WHERE attrelid = CAST(:name AS regclass) AND attnum > 0 ORDER BY attnum", name=name)]
        expected = {
            STAGED[table.name]: [(column.name, sql_type(connection, column.type), False) for column in table.columns]
            for table in (schema.DOCTORS, schema.APPOINTMENTS)
        }
        expected["merge_written"] = expected["merge_appointments"] + [("inserted", "boolean", False)]
        connection.run("ROLLBACK")
    finally:
        connection.close()
    assert staged == expected


def test_ledger_and_rejection_queries_return_the_declared_columns(db_config):
    rejected = pd.DataFrame({"entity": ["appointments"], "source_row": [5], "record_id": [9],
                             "reasons": ["invalid_status;duplicate_row"], "booking_id": ["9"], "status": ["#N/A"]})
    load_run(db_config, run_record("cols"), pd.DataFrame({"id": [1], "name": ["A"], "specialty": [None]}),
             pd.DataFrame({"id": [2], "patient_id": [3], "doctor_id": [1], "booking_date": [0], "status": ["unknown"]}),
             {"appointments": rejected}, {"appointments": "a.xlsx"})
    connection = connect(db_config)
    try:
        (run,) = list_runs(connection, 10)
        (row,) = rejected_rows(connection, "cols")
    finally:
        connection.close()
    assert set(schema.ETL_RUNS.names) <= set(run) and run["mode"] == "replace"
    assert tuple(row) == schema.REJECTION_COLUMNS
    assert row["reasons"] == ["invalid_status", "duplicate_row"] and row["record_id"] == 9
    assert row["raw"] == {"booking_id": "9", "status": "#N/A"}


# --- the declaration itself (no database) ---------------------------------------------------------


def test_the_ledger_row_is_the_run_record_with_its_outcome():
    fields = {field.name for field in dataclasses.fields(RunRecord)}
    assert fields | {"status", "finished_at", "error"} == set(schema.ETL_RUNS.names)


def test_rejection_rows_are_the_declared_columns():
    rejected = pd.DataFrame({"entity": ["doctors"], "source_row": [2], "record_id": [None],
                             "reasons": ["missing_name;duplicate_row"], "name": [None]})
    frame = rejections_for_copy("r", rejected, "d.xlsx")
    assert tuple(frame.columns) == schema.REJECTION_COLUMNS == tuple(
        name for name in schema.ETL_REJECTIONS.names if name != "id")
    assert frame["reasons"].tolist() == [("missing_name", "duplicate_row")]


def test_history_versions_mirror_appointments():
    """merge.py fills appointment_history from appointments column by column (booking_id <- id)."""
    history = {c.name: c.type for c in schema.APPOINTMENT_HISTORY.columns}
    assert {("booking_id" if c.name == "id" else c.name): c.type for c in schema.APPOINTMENTS.columns} == {
        name: kind for name, kind in history.items() if name not in ("valid_from", "valid_to", "run_id")}
    assert schema.APPOINTMENT_HISTORY.key == ("source", "booking_id", "valid_from")


def test_every_copied_column_has_an_encoder():
    for table, names in ((schema.DOCTORS, schema.DOCTORS.names), (schema.APPOINTMENTS, schema.APPOINTMENTS.names),
                         (schema.ETL_REJECTIONS, schema.REJECTION_COLUMNS)):
        for kind in table.types(names):
            assert copy_data.encoder(kind)
    with pytest.raises(KeyError):
        copy_data.encoder("bigserial")
    with pytest.raises(KeyError, match="no column nope"):
        schema.DOCTORS.types(("id", "nope"))


def test_reason_codes():
    codes = schema.REASON_CODES
    assert len(codes) == len(set(codes)) == 18 and schema.UNREADABLE_ROW in codes
    assert set(schema.DOCTOR_REASONS) | set(schema.APPOINTMENT_REASONS) == set(codes)
    columns = set(schema.DOCTOR_COLUMNS) | set(schema.APPOINTMENT_COLUMNS)
    for code in codes:
        kind, _, column = code.partition("_")
        assert code in {schema.MISSING_NAME, schema.INVALID_NAME} or kind not in ("missing", "invalid") \
            or column in columns, code
    assert schema.missing("patient_id") == "missing_patient_id" and schema.invalid("status") == "invalid_status"
    assert all(code == code.lower() and schema.REASON_SEPARATOR not in code for code in codes)


def test_the_declared_values_are_the_check_constraints():
    assert schema.APPOINTMENTS.column("status").check == "status IN ('confirmed', 'cancelled', 'unknown')"
    assert schema.ETL_RUNS.column("mode").check == "mode IN ('replace', 'merge')"
