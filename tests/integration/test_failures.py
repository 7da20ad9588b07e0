"""Critical problems: clear one-line errors, documented exit codes, previous data intact."""

import json

import pytest
from helpers import (
    APPOINTMENT_ROWS,
    APPOINTMENTS_HEADER,
    AS_OF,
    DOCTOR_ROWS,
    DOCTORS_HEADER,
    cli_subprocess,
    fetch,
    snapshot,
    waits_for_the_load_lock,
)

from healthtech_etl.db import connect
from healthtech_etl.load import ADVISORY_LOCK_KEY


def etl_args(doctors, appointments, *extra):
    # --allow-older: the same files are loaded again (without it a re-run of loaded bytes is a no-op)
    return ["etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF, "--allow-older",
            *extra]


@pytest.fixture
def loaded(run_cli, sample_inputs, db_config):
    """A database holding one good run; returns its snapshot."""
    assert run_cli(*etl_args(*sample_inputs)) == 0
    return snapshot(db_config)


def runs_count(db_config):
    return fetch(db_config, "SELECT count(*) FROM healthtech.etl_runs")[0][0]


@pytest.mark.parametrize("problem", ["corrupt", "empty", "missing_column", "header_only", "missing_file"])
def test_bad_input_exits_3_and_changes_nothing(problem, run_cli, loaded, sample_inputs, make_xlsx, tmp_path,
                                               db_config, capsys):
    doctors, _ = sample_inputs
    if problem == "corrupt":
        bad = tmp_path / "bad.xlsx"
        bad.write_bytes(b"not a zip at all")
    elif problem == "empty":
        bad = make_xlsx("bad.xlsx", None, [])
    elif problem == "missing_column":
        bad = make_xlsx("bad.xlsx", ["booking_id", "patient_id", "doctor_id", "status"], [(1, 2, 1, "confirmed")])
    elif problem == "header_only":
        bad = make_xlsx("bad.xlsx", APPOINTMENTS_HEADER, [])
    else:
        bad = tmp_path / "nowhere.xlsx"
    capsys.readouterr()
    assert run_cli(*etl_args(doctors, bad)) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("healthtech-etl: error: ")
    assert "appointments" in err[0]
    assert snapshot(db_config) == loaded
    assert runs_count(db_config) == 1


def test_missing_column_message_names_the_column(run_cli, sample_inputs, make_xlsx, capsys):
    doctors, _ = sample_inputs
    bad = make_xlsx("bad.xlsx", ["Booking ID", "patient_id", "doctor_id", "status"], [(1, 2, 1, "confirmed")])
    assert run_cli(*etl_args(doctors, bad)) == 3
    assert "lacks mandatory column(s) booking_date" in capsys.readouterr().err


def test_unreachable_database_exits_4_with_one_line(sample_inputs, tmp_path):
    doctors, appointments = sample_inputs
    result = cli_subprocess(etl_args(doctors, appointments), cwd=tmp_path,
                            env={"DATABASE_URL": "postgresql://etl:Sup3rSecret@127.0.0.1:9/clinic?connect_timeout=3"})
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot connect to PostgreSQL at etl@127.0.0.1:9/clinic" in lines[0]
    assert "Sup3rSecret" not in result.stderr + result.stdout
    assert not (tmp_path / "reports" / "quality_report.json").exists()  # failed before any work


def test_usage_errors_exit_2(sample_inputs, tmp_path):
    doctors, appointments = sample_inputs
    bad_date = cli_subprocess(etl_args(doctors, appointments, "--as-of", "2025-13-45"), cwd=tmp_path, env={})
    assert bad_date.returncode == 2 and "YYYY-MM-DD" in bad_date.stderr
    bad_url = cli_subprocess(["queries"], cwd=tmp_path, env={"DATABASE_URL": "mysql://x@y/z"})
    assert bad_url.returncode == 2 and "postgresql://" in bad_url.stderr


def test_quality_gate_exits_5_before_loading(run_cli, loaded, sample_inputs, db_config, tmp_path, capsys):
    capsys.readouterr()
    # The sample inputs have critical metrics: --fail-on warning and critical both stop the load.
    assert run_cli(*etl_args(*sample_inputs, "--fail-on", "critical")) == 5
    err = capsys.readouterr().err
    assert err.startswith("healthtech-etl: error: data quality is critical and --fail-on=critical: ")
    assert len(err.strip().splitlines()) == 1
    # Each tripped metric, with its value and threshold.
    for tripped in ("id_completeness 87.50 % < 95 (critical)", "typing_success 93.33 % < 95 (critical)",
                    "acceptance_rate 43.75 % < 75 (critical)"):
        assert tripped in err
    assert "referential_integrity" not in err  # a warning does not trip --fail-on critical
    assert err.rstrip().endswith("nothing loaded (see reports/quality_report.json)")
    assert snapshot(db_config) == loaded
    assert runs_count(db_config) == 2  # the gated run is on record too (see test_run_ledger.py)
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text())
    assert report["status"] == "critical" and report["load_status"] == "gated"


def test_quality_gate_lets_a_clean_file_through(run_cli, make_xlsx, db_config):
    doctors = make_xlsx("d.xlsx", DOCTORS_HEADER, DOCTOR_ROWS[:3])
    appointments = make_xlsx("a.xlsx", APPOINTMENTS_HEADER, APPOINTMENT_ROWS[:7])
    assert run_cli(*etl_args(doctors, appointments, "--fail-on", "warning")) == 0
    assert fetch(db_config, "SELECT count(*) FROM healthtech.appointments") == [[7]]


def test_failure_during_the_load_rolls_everything_back(run_cli, loaded, sample_inputs, db_config, capsys):
    # A real database error in the middle of the COPY of appointments (after the TRUNCATE and
    # the doctors COPY of the same transaction).
    connection = connect(db_config)
    connection.run("""
        CREATE FUNCTION healthtech.boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id = 105 THEN RAISE EXCEPTION 'injected failure'; END IF;
            RETURN NEW;
        END $$""")
    connection.run("CREATE TRIGGER boom BEFORE INSERT ON healthtech.appointments "
                   "FOR EACH ROW EXECUTE FUNCTION healthtech.boom()")
    connection.close()
    capsys.readouterr()
    assert run_cli(*etl_args(*sample_inputs)) == 4
    err = capsys.readouterr().err
    assert "rolled back" in err and "injected failure" in err
    assert snapshot(db_config) == loaded
    runs = fetch(db_config, "SELECT status, error FROM healthtech.etl_runs ORDER BY started_at")
    assert [status for status, _ in runs] == ["succeeded", "failed"]
    assert "injected failure" in runs[1][1]


def test_runs_wait_for_each_other(sample_inputs, make_xlsx, db_config, tmp_path, loaded):
    """A run that starts while another holds the load lock waits, then loads everything."""
    other_doctors = make_xlsx("d2.xlsx", DOCTORS_HEADER, [(50, "Dr. Solo", "Oncology")])
    other_appointments = make_xlsx("a2.xlsx", APPOINTMENTS_HEADER, [(900, 1, 50, "2025-10-01", "confirmed")])
    holder = connect(db_config)
    holder.run("START TRANSACTION")
    holder.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
    process = cli_subprocess(etl_args(other_doctors, other_appointments), cwd=tmp_path,
                             env={"DATABASE_URL": db_config.url()}, wait=False)
    try:
        assert waits_for_the_load_lock(db_config, process), "the second run did not wait for the lock"
        assert snapshot(db_config) == loaded  # nothing changed while it waits
    finally:
        holder.run("COMMIT")
        holder.close()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert fetch(db_config, "SELECT id FROM healthtech.appointments") == [[900]]


def test_two_concurrent_runs_serialise(sample_inputs, make_xlsx, db_config, tmp_path):
    other_doctors = make_xlsx("d2.xlsx", DOCTORS_HEADER, [(50, "Dr. Solo", "Oncology")])
    other_appointments = make_xlsx("a2.xlsx", APPOINTMENTS_HEADER, [(900, 1, 50, "2025-10-01", "confirmed")])
    env = {"DATABASE_URL": db_config.url()}
    first = cli_subprocess(etl_args(*sample_inputs), cwd=tmp_path, env=env, wait=False)
    second = cli_subprocess(etl_args(other_doctors, other_appointments), cwd=tmp_path, env=env, wait=False)
    results = [process.communicate(timeout=120) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    ids = {row[0] for row in fetch(db_config, "SELECT id FROM healthtech.appointments")}
    assert ids in ({900}, {101, 102, 103, 104, 105, 106, 107})  # one whole run, never a mix
    assert fetch(db_config, "SELECT status, count(*) FROM healthtech.etl_runs GROUP BY status") == [["succeeded", 2]]
