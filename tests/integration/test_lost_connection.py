"""The connection dies during the load: the backend is terminated (pg_terminate_backend from a
second connection) during the COPY or the index rebuild, or the server itself stops mid-load.
Exit 4 with one line, no traceback, previous data intact, and a ``failed`` ledger row whenever
the server is reachable again."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from helpers import AS_OF, DB_ENV_KEYS, fetch, snapshot

from healthtech_etl import bulk, cli, load
from healthtech_etl.db import DbConfig, connect
from healthtech_etl.embedded import server_state


class Saboteur:
    """Wraps the load's connection: runs ``fault()`` mid-COPY of appointments (after the first
    chunk went out) or just before the first statement starting with ``before``."""

    def __init__(self, connection: Any, fault: Callable[[int], None], before: str = "") -> None:
        self._connection = connection
        self._fault = fault
        self._before = before
        self.pid = connection.run("SELECT pg_backend_pid()")[0][0]
        self.fired = False

    def run(self, sql: str, stream: Any = None, **params: Any) -> Any:
        if not self.fired and self._before and sql.startswith(self._before):
            self.fired = True
            self._fault(self.pid)
        if not self.fired and not self._before and sql.startswith("COPY healthtech.appointments"):
            stream = self._interrupting(stream)
        if stream is None:
            return self._connection.run(sql, **params)
        return self._connection.run(sql, stream=stream, **params)

    def _interrupting(self, stream: Any) -> Iterator[Any]:
        for number, chunk in enumerate(stream):
            if number == 1:
                self.fired = True
                self._fault(self.pid)
            yield chunk

    def close(self) -> None:
        self._connection.close()


def terminate_backend(admin_config: DbConfig) -> Callable[[int], None]:
    def fault(pid: int) -> None:
        admin = connect(admin_config)
        try:
            # The second argument makes PostgreSQL wait until the backend is really gone.
            assert admin.run("SELECT pg_terminate_backend(:pid, 30000)", pid=pid) == [[True]]
        finally:
            admin.close()

    return fault


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def etl_args(doctors: Path, appointments: Path) -> list[str]:
    # --allow-older: the same files are loaded again (without it a re-run of loaded bytes is a no-op)
    return ["etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF, "--allow-older"]


@pytest.fixture
def loaded(run_cli, sample_inputs, db_config):
    assert run_cli(*etl_args(*sample_inputs)) == 0
    return snapshot(db_config)


def sabotage(monkeypatch: pytest.MonkeyPatch, fault: Callable[[int], None], before: str = "") -> list:
    saboteurs: list = []
    real_connect = load.connect

    def connect_with_saboteur(config: DbConfig) -> Any:
        if saboteurs:  # the ledger connection afterwards is left alone
            return real_connect(config)
        saboteurs.append(Saboteur(real_connect(config), fault, before))
        return saboteurs[0]

    monkeypatch.setattr(load, "connect", connect_with_saboteur)
    return saboteurs


def test_backend_terminated_during_copy(run_cli, loaded, sample_inputs, db_config, monkeypatch, capsys):
    saboteurs = sabotage(monkeypatch, terminate_backend(db_config))
    capsys.readouterr()
    assert run_cli(*etl_args(*sample_inputs)) == 4
    assert saboteurs[0].fired
    line = one_line(capsys.readouterr().err)
    assert line.startswith("healthtech-etl: error: lost the connection to PostgreSQL during the load (")
    assert line.endswith("nothing was committed, previous data kept")
    assert snapshot(db_config) == loaded
    runs = fetch(db_config, "SELECT status, error FROM healthtech.etl_runs ORDER BY started_at")
    assert [status for status, _ in runs] == ["succeeded", "failed"]
    assert runs[1][1].startswith("lost the connection to PostgreSQL during the load")


def test_backend_terminated_during_the_index_rebuild(run_cli, loaded, sample_inputs, db_config, monkeypatch,
                                                     capsys):
    monkeypatch.setattr(bulk, "REBUILD_MIN_ROWS", 1)  # rebuild the indexes even for this small load
    saboteurs = sabotage(monkeypatch, terminate_backend(db_config),
                         before="ALTER TABLE healthtech.appointments ADD CONSTRAINT")
    capsys.readouterr()
    assert run_cli(*etl_args(*sample_inputs)) == 4
    assert saboteurs[0].fired
    line = one_line(capsys.readouterr().err)
    assert "lost the connection to PostgreSQL during the load" in line and "previous data kept" in line
    assert snapshot(db_config) == loaded
    assert fetch(db_config, "SELECT status FROM healthtech.etl_runs ORDER BY started_at") == [["succeeded"],
                                                                                              ["failed"]]
    # The keys and indexes the load dropped are back (the rollback restored them).
    assert fetch(db_config, "SELECT count(*) FROM pg_indexes WHERE tablename = 'appointments'") == [[3]]


def db_command(action: str, pgdata: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in DB_ENV_KEYS}
    env["PGDATA_DIR"] = str(pgdata)
    return subprocess.run([sys.executable, "-m", "healthtech_etl.cli", "db", action, *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_server_stopped_mid_load(tmp_path, sample_inputs, monkeypatch, capsys):
    """Its own embedded server (not the session's): it is stopped in the middle of the COPY."""
    pgdata = tmp_path / "own-pg"
    started = db_command("start", pgdata, tmp_path)
    assert started.returncode == 0, started.stderr
    try:
        state = server_state(pgdata)
        assert state.running
        config = DbConfig(user="postgres", host=None, unix_socket_dir=state.socket_dir, database="postgres",
                          sslmode="disable")
        monkeypatch.chdir(tmp_path)
        for key in DB_ENV_KEYS:
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("DATABASE_URL", config.url())
        assert cli.main(etl_args(*sample_inputs)) == 0
        before = snapshot(config)

        def stop_server(pid: int) -> None:
            stopped = db_command("stop", pgdata, tmp_path, "--force")
            assert stopped.returncode == 0, stopped.stderr

        saboteurs = sabotage(monkeypatch, stop_server)
        capsys.readouterr()
        assert cli.main(etl_args(*sample_inputs)) == 4
        assert saboteurs[0].fired
        line = one_line(capsys.readouterr().err)
        assert "lost the connection to PostgreSQL during the load" in line
        assert line.endswith(" not in etl_runs: PostgreSQL unreachable; the next run that reaches it records it "
                             "as failed)")
        lost_run = line.split(" (run ")[1].split()[0]
        assert not server_state(pgdata).running

        restarted = db_command("start", pgdata, tmp_path)
        assert restarted.returncode == 0, restarted.stderr
        assert snapshot(config) == before
        assert fetch(config, "SELECT status FROM healthtech.etl_runs") == [["succeeded"]]

        # The server is reachable again: the next run writes the lost run's failed row first.
        monkeypatch.setattr(load, "connect", connect)
        assert cli.main(etl_args(*sample_inputs)) == 0
        runs = fetch(config, "SELECT run_id, status, error FROM healthtech.etl_runs ORDER BY started_at")
        assert [(run_id == lost_run, status) for run_id, status, _ in runs] == [
            (False, "succeeded"), (True, "failed"), (False, "succeeded")]
        assert runs[1][2].startswith("lost the connection to PostgreSQL during the load")
        assert not (tmp_path / "logs" / "unrecorded_runs.jsonl").exists()
    finally:
        db_command("stop", pgdata, tmp_path, "--force")
    assert not server_state(pgdata).running
