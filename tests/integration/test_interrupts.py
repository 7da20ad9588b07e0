"""SIGINT and SIGTERM at exact points of the load (fault_driver.py, no timing): the one line says
whether the run committed, as the ledger (etl_runs) does, and the tables agree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    APPOINTMENTS_HEADER,
    AS_OF,
    DB_ENV_KEYS,
    DOCTORS_HEADER,
    fetch,
    snapshot,
)

from healthtech_etl.db import connect

DRIVER = Path(__file__).with_name("fault_driver.py")
NEW_DOCTORS = [(50, "Dr. Solo", "Oncology")]
NEW_APPOINTMENTS = [(900, 1, 50, "2025-10-01", "confirmed")]


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def run_with_fault(signal_name: str, point: str, args: list, cwd: Path, database_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in DB_ENV_KEYS}
    env["DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, str(DRIVER), signal_name, point, "--", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def loaded(run_cli, sample_inputs, db_config):
    assert run_cli("etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1]),
                   "--as-of", AS_OF) == 0
    return snapshot(db_config)


@pytest.fixture
def new_inputs(make_xlsx):
    return (make_xlsx("d2.xlsx", DOCTORS_HEADER, NEW_DOCTORS),
            make_xlsx("a2.xlsx", APPOINTMENTS_HEADER, NEW_APPOINTMENTS))


def etl(inputs):
    return ["etl", "--doctors", str(inputs[0]), "--appointments", str(inputs[1]), "--as-of", AS_OF]


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", ["before_load", "during_copy", "before_commit"])
def test_interrupt_before_the_commit_changes_nothing_and_says_so(signal_name, point, loaded, new_inputs, db_config,
                                                                  tmp_path):
    assert (tmp_path / "reports" / "quality_report.html").is_file()  # the loaded run's page
    result = run_with_fault(signal_name, point, etl(new_inputs), tmp_path, db_config.url())
    assert result.returncode == 130
    line = one_line(result.stderr)
    assert line.startswith("healthtech-etl: error: interrupted; nothing was committed (run ")
    # The earlier run's page is gone: beside this run's report it would pass for this run's.
    assert not (tmp_path / "reports" / "quality_report.html").exists()
    assert line.endswith(" recorded as failed)")
    assert snapshot(db_config) == loaded
    runs = fetch(db_config, "SELECT status, error FROM healthtech.etl_runs ORDER BY started_at")
    assert [status for status, _ in runs] == ["succeeded", "failed"]
    assert runs[1][1] == f"interrupted ({signal_name}) before the load committed"
    failed_run = fetch(db_config, "SELECT run_id FROM healthtech.etl_runs WHERE status = 'failed'")[0][0]
    assert line.split("(run ")[1].split()[0] == failed_run
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text())
    assert (report["run_id"], report["load_status"]) == (failed_run, "not_loaded")


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("point", ["during_commit", "after_commit"])
def test_interrupt_once_commit_was_sent_says_the_run_succeeded(signal_name, point, loaded, new_inputs, db_config,
                                                               tmp_path):
    result = run_with_fault(signal_name, point, etl(new_inputs), tmp_path, db_config.url())
    assert result.returncode == 130
    line = one_line(result.stderr)
    runs = fetch(db_config, "SELECT run_id, status FROM healthtech.etl_runs ORDER BY started_at")
    assert [status for _, status in runs] == ["succeeded", "succeeded"]
    assert line == f"healthtech-etl: error: interrupted after the load committed: run {runs[1][0]} succeeded"
    assert fetch(db_config, "SELECT id FROM healthtech.appointments") == [[900]]
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text())
    assert (report["run_id"], report["load_status"]) == (runs[1][0], "succeeded")


def test_interrupt_during_a_commit_the_server_rejects_says_nothing_was_committed(loaded, new_inputs, db_config,
                                                                                 tmp_path):
    # A deferred constraint trigger fails at COMMIT time: the COMMIT message was sent, the server refused it.
    connection = connect(db_config)
    connection.run("""CREATE FUNCTION healthtech.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.status = 'succeeded' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$""")
    connection.run("CREATE CONSTRAINT TRIGGER refuse AFTER UPDATE ON healthtech.etl_runs "
                   "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION healthtech.refuse()")
    connection.close()
    result = run_with_fault("SIGTERM", "during_commit", etl(new_inputs), tmp_path, db_config.url())
    assert result.returncode == 130
    assert one_line(result.stderr).startswith("healthtech-etl: error: interrupted; nothing was committed (run ")
    assert snapshot(db_config) == loaded
    assert [row[0] for row in fetch(db_config, "SELECT status FROM healthtech.etl_runs ORDER BY started_at")] == [
        "succeeded", "failed"]

