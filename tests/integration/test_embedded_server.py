"""The embedded PostgreSQL a local run starts on demand (its own data dir here, not the session's
server): ``db status|start|stop``, a run killed with SIGKILL followed by a normal run, and a
stale ``postmaster.pid`` naming another process."""

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import AS_OF, DB_ENV_KEYS, fetch

from healthtech_etl.db import DbConfig
from healthtech_etl.embedded import server_state

DRIVER = Path(__file__).with_name("fault_driver.py")


def run(args: list, cwd: Path, pgdata: Path, driver: tuple = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in DB_ENV_KEYS}
    env["PGDATA_DIR"] = str(pgdata)
    command = [sys.executable, str(DRIVER), *driver, "--"] if driver else [sys.executable, "-m", "healthtech_etl.cli"]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def handles(pgdata: Path) -> list:
    path = pgdata / ".handle_pids.json"
    return json.loads(path.read_text()) if path.exists() else []


def config_of(pgdata: Path) -> DbConfig:
    state = server_state(pgdata)
    assert state.running
    return DbConfig(user="postgres", host=None, unix_socket_dir=state.socket_dir, sslmode="disable")


def test_killed_run_then_normal_run_then_stale_pid_file(tmp_path, sample_inputs):
    pgdata = tmp_path / "pg"
    try:
        check_lifecycle(pgdata, tmp_path, sample_inputs)
    finally:  # never leave a server behind, whatever failed
        run(["db", "stop", "--force"], tmp_path, pgdata)


def check_lifecycle(pgdata: Path, tmp_path: Path, sample_inputs: tuple) -> None:
    etl = ["etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1]), "--as-of", AS_OF]

    status = run(["db", "status"], tmp_path, pgdata)
    assert status.returncode == 0
    assert one_line(status.stdout) == f"embedded PostgreSQL in {pgdata}: not created yet (the first run creates it)"
    assert not pgdata.exists()

    # A run killed in the middle of its COPY: no atexit, its pid stays in the handle file.
    killed = run(etl, tmp_path, pgdata, driver=("SIGKILL", "during_copy"))
    assert killed.returncode == -9
    state = server_state(pgdata)
    assert state.running and state.stale_users == (killed_pid := handles(pgdata)[0],) and not state.users
    assert "1 stale handle(s) from killed runs" in one_line(run(["db", "status"], tmp_path, pgdata).stdout)

    # The next normal run reuses the orphaned server, loads, and stops it when it ends.
    normal = run(etl, tmp_path, pgdata)
    assert normal.returncode == 0, normal.stderr
    assert normal.stderr == ""
    assert not server_state(pgdata).running
    assert killed_pid not in handles(pgdata) and handles(pgdata) == []

    started = run(["db", "start"], tmp_path, pgdata)
    assert started.returncode == 0, started.stderr
    assert "stop it with 'healthtech-etl db stop'" in one_line(started.stdout)
    config = config_of(pgdata)
    assert fetch(config, "SELECT status FROM healthtech.etl_runs") == [["succeeded"]]  # the killed run left nothing
    assert fetch(config, "SELECT count(*) FROM healthtech.appointments") == [[7]]

    # 'db stop' refuses while a live run holds a handle, unless forced.
    (pgdata / ".handle_pids.json").write_text(json.dumps([os.getpid()]))
    refused = run(["db", "stop"], tmp_path, pgdata)
    assert refused.returncode == 4
    assert one_line(refused.stderr).endswith("or use 'db stop --force' (its load is rolled back)")
    assert server_state(pgdata).running
    stopped = run(["db", "stop", "--force"], tmp_path, pgdata)
    assert stopped.returncode == 0 and one_line(stopped.stdout) == f"embedded PostgreSQL in {pgdata}: stopped"
    assert not server_state(pgdata).running and handles(pgdata) == []

    # A stale postmaster.pid (server gone, its pid reused by another process) is cleared, not trusted.
    lines = [str(os.getpid()), str(pgdata), "1700000000", "5432", str(pgdata), "", "  0  0", "ready   "]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    again = run(etl, tmp_path, pgdata)
    assert again.returncode == 0, again.stderr
    assert not server_state(pgdata).running and handles(pgdata) == []
