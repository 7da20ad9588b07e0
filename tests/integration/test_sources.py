"""Clinics (sources) on the real PostgreSQL: two clinics whose doctor and booking ids collide, replace
and merge per source, referential integrity within a source (and judged again under the load lock,
with two real concurrent runs), ordered exports, no-op re-runs and the upgrade of a database created
by the previous release."""

import datetime as dt
import json

import pytest
from helpers import APPOINTMENTS_HEADER, AS_OF, DOCTORS_HEADER, cli_subprocess, fetch, waits_for_the_load_lock
from test_merge import assert_history_matches_tables

from healthtech_etl.db import connect
from healthtech_etl.load import ADVISORY_LOCK_KEY, RunRecord, load_run
from healthtech_etl.queries import run_queries

# The same doctor and booking ids in both clinics, different data; doctor 7 is clinic A's only.
A_DOCTORS = [(1, "Dr. Ana García", "cardiology"), (7, "Dr. Seven", "Dermatology")]
A_BOOKINGS = [(10, 34, 1, "2025-10-22 09:00", "cancelled"), (11, 35, 7, "2025-10-23 10:00", "confirmed")]
B_DOCTORS = [(1, "Dr. Bea Braun", "Pediatrics")]
B_BOOKINGS = [(10, 34, 1, "2025-10-06 09:00", "confirmed"), (11, 36, 1, "2025-10-22 11:00", "cancelled"),
              (12, 37, 7, "2025-10-09 12:00", "confirmed")]  # 12: doctor 7 is clinic A's, not B's
TABLES = ("SELECT source, id, patient_id, doctor_id, status FROM healthtech.appointments ORDER BY 1, 2",
          "SELECT source, id, name FROM healthtech.doctors ORDER BY 1, 2")


@pytest.fixture
def clinics(make_xlsx):
    return {
        "a": (make_xlsx("a_doctors.xlsx", DOCTORS_HEADER, A_DOCTORS), make_xlsx("a_app.xlsx", APPOINTMENTS_HEADER,
                                                                                A_BOOKINGS)),
        "b": (make_xlsx("b_doctors.xlsx", DOCTORS_HEADER, B_DOCTORS), make_xlsx("b_app.xlsx", APPOINTMENTS_HEADER,
                                                                                B_BOOKINGS)),
        "a2": (make_xlsx("a2_doctors.xlsx", DOCTORS_HEADER, A_DOCTORS[:1]),
               make_xlsx("a2_app.xlsx", APPOINTMENTS_HEADER, [(10, 34, 1, "2025-10-22 09:00", "confirmed")])),
    }


def etl(files, source, *extra):
    doctors, appointments = files
    return ["etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
            "--source", source, *extra]


def state(db_config, source):
    return [[row for row in fetch(db_config, query) if row[0] == source] for query in TABLES]


def rejected(db_config, source):
    return fetch(db_config, "SELECT record_id, reasons FROM healthtech.etl_rejections WHERE source = :s "
                            "AND entity = 'appointments' ORDER BY record_id", s=source)


@pytest.mark.parametrize("mode", ["replace", "merge"])
def test_two_clinics_with_colliding_ids_keep_their_own_rows(mode, run_cli, clinics, db_config):
    assert run_cli(*etl(clinics["a"], "clinic-a", "--mode", mode)) == 0
    clinic_a = state(db_config, "clinic-a")
    assert clinic_a[0] == [["clinic-a", 10, 34, 1, "cancelled"], ["clinic-a", 11, 35, 7, "confirmed"]]

    assert run_cli(*etl(clinics["b"], "clinic-b", "--mode", mode)) == 0
    assert state(db_config, "clinic-a") == clinic_a  # B's load leaves A's rows as they were
    assert state(db_config, "clinic-b")[0] == [["clinic-b", 10, 34, 1, "confirmed"],
                                               ["clinic-b", 11, 36, 1, "cancelled"]]
    # Referential integrity within the source: doctor 7 is clinic A's only.
    assert rejected(db_config, "clinic-b") == [[12, ["unknown_doctor"]]]
    clinic_b = state(db_config, "clinic-b")

    # A new export of clinic A: only A's rows change.
    assert run_cli(*etl(clinics["a2"], "clinic-a", "--mode", mode)) == 0
    assert state(db_config, "clinic-b") == clinic_b
    expected = [["clinic-a", 10, 34, 1, "confirmed"]] + ([["clinic-a", 11, 35, 7, "confirmed"]] if mode == "merge"
                                                         else [])
    assert state(db_config, "clinic-a")[0] == expected
    if mode == "merge":
        assert fetch(db_config, "SELECT source, booking_id, status FROM healthtech.appointment_history "
                                "ORDER BY source, booking_id, valid_from") == [
            ["clinic-a", 10, "cancelled"], ["clinic-a", 10, "confirmed"], ["clinic-a", 11, "confirmed"],
            ["clinic-b", 10, "confirmed"], ["clinic-b", 11, "cancelled"]]
        assert_history_matches_tables(db_config)

    # The business questions answer per source and over all sources.
    results = {result.name: result.rows for result in run_queries(db_config)}
    assert results["3_cancelled_oct_21_24"] == [["clinic-b", 1], ["(all)", 1]]
    assert results["2_patient_34_confirmed"] == [["clinic-a", 34, 1], ["clinic-b", 34, 1], ["(all)", 34, 2]]
    top = results["1_most_confirmed_doctor"]
    assert ["(all)", "clinic-b", 1, "Dr. Bea Braun", "Pediatrics", 1] in top
    assert ["clinic-b", "clinic-b", 1, "Dr. Bea Braun", "Pediatrics", 1] in top


def test_merge_refuses_an_older_export_and_a_rerun_of_the_same_bytes_is_a_no_op(run_cli, clinics, db_config,
                                                                               capsys):
    merge = ("--mode", "merge")
    assert run_cli(*etl(clinics["a"], "clinic-a", *merge, "--export-date", "2025-11-01")) == 0
    assert run_cli(*etl(clinics["b"], "clinic-b", *merge, "--export-date", "2025-09-01")) == 0  # its own order
    before = state(db_config, "clinic-a")
    capsys.readouterr()

    assert run_cli(*etl(clinics["a2"], "clinic-a", *merge, "--export-date", "2025-10-01")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "older than the newest source 'clinic-a' has loaded (2025-11-01)" in err
    assert state(db_config, "clinic-a") == before
    assert fetch(db_config, "SELECT status, export_date FROM healthtech.etl_runs WHERE source = 'clinic-a' "
                            "ORDER BY started_at") == [["succeeded", dt.date(2025, 11, 1)], ["failed", dt.date(2025, 10, 1)]]

    # The same bytes again (whatever their date): nothing written, exit 0, one line.
    runs_before = fetch(db_config, "SELECT count(*) FROM healthtech.etl_runs")
    assert run_cli(*etl(clinics["a"], "clinic-a", *merge, "--export-date", "2025-12-01")) == 0
    out = capsys.readouterr().out
    first = fetch(db_config, "SELECT run_id FROM healthtech.etl_runs WHERE source = 'clinic-a' AND status = "
                             "'succeeded'")[0][0]
    assert out == f"already loaded by run {first} (source clinic-a): nothing written (--allow-older loads it again)\n"
    assert fetch(db_config, "SELECT count(*) FROM healthtech.etl_runs") == runs_before

    assert run_cli(*etl(clinics["a2"], "clinic-a", *merge, "--export-date", "2025-10-01", "--allow-older")) == 0
    assert state(db_config, "clinic-a")[0][0] == ["clinic-a", 10, 34, 1, "confirmed"]

    capsys.readouterr()
    assert run_cli("runs") == 0
    listing = capsys.readouterr().out
    assert "source" in listing.splitlines()[0] and "export" in listing.splitlines()[0]
    assert "clinic-b" in listing and "2025-09-01" in listing
    assert run_cli(*etl(clinics["a"], "Clinic A")) == 2
    assert "invalid source 'Clinic A'" in capsys.readouterr().err


def test_a_merge_queued_behind_a_replace_that_removes_its_doctor_loads_the_rest(clinics, make_xlsx, db_config,
                                                                                tmp_path):
    """Two real runs wait for the lock (held here): a replace of clinic A without doctor 7, then a
    merge of clinic A whose appointment 13 has doctor 7 (loaded when it was cleaned). The replace
    goes first; the merge rejects 13 as unknown_doctor under the lock and loads the rest."""
    env = {"DATABASE_URL": db_config.url()}
    assert cli_subprocess(etl(clinics["a"], "clinic-a"), cwd=tmp_path, env=env).returncode == 0
    merge_files = (make_xlsx("m_doctors.xlsx", DOCTORS_HEADER, [(2, "Dr. Two", "X")]),
                   make_xlsx("m_app.xlsx", APPOINTMENTS_HEADER, [(13, 50, 7, "2025-10-10 10:00", "confirmed"),
                                                                 (14, 51, 2, "2025-10-11 10:00", "confirmed")]))
    holder = connect(db_config)
    holder.run("START TRANSACTION")
    holder.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
    try:
        replace = cli_subprocess(etl(clinics["a2"], "clinic-a", "--report-dir", "r1"), cwd=tmp_path, env=env,
                                 wait=False)
        assert waits_for_the_load_lock(db_config, replace)
        merge = cli_subprocess(etl(merge_files, "clinic-a", "--mode", "merge", "--report-dir", "r2"), cwd=tmp_path,
                               env=env, wait=False)
        deadline = dt.datetime.now() + dt.timedelta(seconds=60)
        while len(fetch(db_config, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")) < 2:
            assert merge.poll() is None and dt.datetime.now() < deadline, merge.communicate()
    finally:
        holder.run("COMMIT")
        holder.close()
    assert [process.wait(timeout=120) for process in (replace, merge)] == [0, 0], merge.communicate()
    assert state(db_config, "clinic-a")[0] == [["clinic-a", 10, 34, 1, "confirmed"], ["clinic-a", 14, 51, 2,
                                                                                       "confirmed"]]
    merge_run = fetch(db_config, "SELECT run_id, counts -> 'appointments' FROM healthtech.etl_runs "
                                 "WHERE mode = 'merge'")
    assert merge_run[0][1]["loaded"] == 1 and merge_run[0][1]["rejected_after_lock"] == 1
    assert fetch(db_config, "SELECT record_id, reasons FROM healthtech.etl_rejections WHERE run_id = :r",
                 r=merge_run[0][0]) == [[13, ["unknown_doctor"]]]
    report = json.loads((tmp_path / "r2" / "quality_report.json").read_text())
    assert report["counts"]["appointments"]["rejected_after_lock"] == 1 and report["load_status"] == "succeeded"


# The DDL of the release before sources (schema.py at that release, rendered): a database it created
# is upgraded in place by the first load - rows become source 'default', keys rebuilt with source.
PREVIOUS_RELEASE_DDL = """
CREATE SCHEMA IF NOT EXISTS healthtech;
CREATE TABLE healthtech.doctors (id bigint NOT NULL, name text NOT NULL, specialty text, PRIMARY KEY (id));
CREATE TABLE healthtech.appointments (
    id bigint NOT NULL, patient_id bigint NOT NULL, doctor_id bigint NOT NULL REFERENCES healthtech.doctors (id),
    booking_date timestamp NOT NULL, status text NOT NULL CHECK (status IN ('confirmed', 'cancelled', 'unknown')),
    PRIMARY KEY (id));
CREATE INDEX appointments_doctor_id_idx ON healthtech.appointments (doctor_id);
CREATE INDEX appointments_patient_id_idx ON healthtech.appointments (patient_id);
CREATE TABLE healthtech.etl_runs (
    run_id text NOT NULL, started_at timestamptz NOT NULL, finished_at timestamptz,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'gated')),
    doctors_file text, doctors_sha256 text, appointments_file text, appointments_sha256 text,
    counts jsonb, metrics jsonb, error text,
    mode text NOT NULL DEFAULT 'replace' CHECK (mode IN ('replace', 'merge')), PRIMARY KEY (run_id));
CREATE TABLE healthtech.etl_rejections (
    id bigserial NOT NULL, run_id text NOT NULL REFERENCES healthtech.etl_runs (run_id), entity text NOT NULL,
    source_file text NOT NULL, row_number integer NOT NULL, record_id bigint, reasons text[] NOT NULL,
    raw jsonb NOT NULL, PRIMARY KEY (id));
CREATE INDEX etl_rejections_run_id_idx ON healthtech.etl_rejections (run_id);
CREATE TABLE healthtech.appointment_history (
    booking_id bigint NOT NULL, patient_id bigint NOT NULL, doctor_id bigint NOT NULL,
    booking_date timestamp NOT NULL, status text NOT NULL, valid_from timestamptz NOT NULL,
    valid_to timestamptz CHECK (valid_to >= valid_from), run_id text NOT NULL, PRIMARY KEY (booking_id, valid_from));
CREATE UNIQUE INDEX appointment_history_open_idx ON healthtech.appointment_history (booking_id)
    WHERE valid_to IS NULL;
INSERT INTO healthtech.doctors VALUES (1, 'Dr. Old', NULL);
INSERT INTO healthtech.appointments VALUES (10, 34, 1, '2025-10-01', 'confirmed');
INSERT INTO healthtech.etl_runs (run_id, started_at, finished_at, status, mode, doctors_sha256,
    appointments_sha256) VALUES ('old', now(), now(), 'succeeded', 'merge', 'x', 'y');
INSERT INTO healthtech.appointment_history VALUES (10, 34, 1, '2025-10-01', 'confirmed', now(), NULL, 'old');
INSERT INTO healthtech.etl_rejections (run_id, entity, source_file, row_number, reasons, raw)
    VALUES ('old', 'appointments', 'a.xlsx', 3, '{unknown_doctor}', '{}')"""


def test_a_database_of_the_previous_release_is_upgraded_in_place(db_config, pg_server, run_cli, clinics, capsys):
    from test_schema import COLUMNS_SQL, DEFINITIONS_SQL, create_everything

    create_everything(db_config)
    fresh = fetch(db_config, COLUMNS_SQL), fetch(db_config, DEFINITIONS_SQL)
    older = pg_server.with_database(f"{db_config.database}_prev")
    admin = connect(pg_server)
    admin.run(f"CREATE DATABASE {older.database}")
    admin.close()
    try:
        connection = connect(older)
        connection.run(PREVIOUS_RELEASE_DDL)
        connection.close()
        # Before its first load, the run history reads it (the missing columns as their defaults).
        assert run_cli("runs", "--json", env={"DATABASE_URL": older.url()}) == 0
        assert [(run["source"], run["export_date"]) for run in json.loads(capsys.readouterr().out)] == [
            ("default", None)]
        # The first load upgrades it; clinic B's colliding ids live beside the old rows.
        assert run_cli(*etl(clinics["b"], "clinic-b", "--mode", "merge"), env={"DATABASE_URL": older.url()}) == 0
        assert (fetch(older, COLUMNS_SQL), fetch(older, DEFINITIONS_SQL)) == fresh
        assert fetch(older, TABLES[0]) == [["clinic-b", 10, 34, 1, "confirmed"], ["clinic-b", 11, 36, 1, "cancelled"],
                                           ["default", 10, 34, 1, "confirmed"]]
        assert fetch(older, "SELECT source, count(*) FROM healthtech.appointment_history GROUP BY 1 ORDER BY 1") == [
            ["clinic-b", 2], ["default", 1]]
        assert fetch(older, "SELECT run_id, source FROM healthtech.etl_rejections WHERE run_id = 'old'") == [
            ["old", "default"]]
        assert_history_matches_tables(older)
        # A merge of the default source sees its old rows: history continues from them.
        run = RunRecord(run_id="next", started_at=dt.datetime.now(dt.timezone.utc), doctors_file="d",
                        doctors_sha256="1", appointments_file="a", appointments_sha256="1", counts={}, metrics={},
                        mode="merge")
        import pandas as pd

        load_run(older, run, pd.DataFrame({"id": [1], "name": ["Dr. Old"], "specialty": [None], "source_row": [2]}),
                 pd.DataFrame({"id": [10], "patient_id": [34], "doctor_id": [1], "source_row": [2],
                               "booking_date": pd.to_datetime(["2025-10-01"]), "status": ["cancelled"]}), {},
                 {"doctors": "d", "appointments": "a"})
        assert fetch(older, "SELECT status, run_id FROM healthtech.appointment_history WHERE source = 'default' "
                            "ORDER BY valid_from") == [["confirmed", "old"], ["cancelled", "next"]]
    finally:
        admin = connect(pg_server)
        admin.run(f"DROP DATABASE IF EXISTS {older.database} WITH (FORCE)")
        admin.close()


def test_a_replace_of_bytes_loaded_before_a_later_export_loads_them_again(run_cli, clinics, db_config, capsys):
    """Replace: "already loaded" only while the source's tables still hold those bytes."""
    assert run_cli(*etl(clinics["a"], "clinic-a")) == 0
    first = state(db_config, "clinic-a")
    assert run_cli(*etl(clinics["a2"], "clinic-a")) == 0
    assert state(db_config, "clinic-a") != first
    capsys.readouterr()
    assert run_cli(*etl(clinics["a"], "clinic-a")) == 0
    assert "already loaded" not in capsys.readouterr().out
    assert state(db_config, "clinic-a") == first
    assert run_cli(*etl(clinics["a"], "clinic-a")) == 0  # now it is the tables' content: a no-op
    assert capsys.readouterr().out.startswith("already loaded by run ")


def test_the_same_bytes_judged_with_other_settings_load_again(run_cli, clinics, db_config, capsys):
    """Another as-of date or --day-first reads the same bytes into other rows: not a no-op."""
    assert run_cli(*etl(clinics["a"], "clinic-a")) == 0
    capsys.readouterr()
    assert run_cli(*etl(clinics["a"], "clinic-a", "--day-first")) == 0
    assert "already loaded" not in capsys.readouterr().out
    assert run_cli(*etl(clinics["a"], "clinic-a", "--day-first")) == 0
    assert capsys.readouterr().out.startswith("already loaded by run ")


def test_a_clinics_page_shows_the_trend_of_its_own_runs(run_cli, clinics, db_config):
    from healthtech_etl.history import page_for_run

    assert run_cli(*etl(clinics["a"], "clinic-a")) == 0
    assert run_cli(*etl(clinics["b"], "clinic-b")) == 0
    assert run_cli(*etl(clinics["a2"], "clinic-a")) == 0
    runs = fetch(db_config, "SELECT run_id, source FROM healthtech.etl_runs ORDER BY started_at")
    for run_id, source in runs:
        page = page_for_run(db_config, run_id)
        mine = [other for other, of in runs if of == source]
        assert [trend["run_id"] for trend in page.trends] == mine[:mine.index(run_id) + 1]
