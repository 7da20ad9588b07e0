"""The embedded PostgreSQL a local run starts on demand (data dirs of their own here, not the
session's server): it outlives the command, the next one reuses it, ``db status`` reports it and
who uses it, ``db stop`` stops it (refused under a run unless --force), the idle watchdog stops it,
concurrent first runs create one server, and leftovers (a half-done initdb, a stale
``postmaster.pid``) are dealt with; SIGTERM, SIGINT and SIGKILL at a spread of moments of a run
(from a cold, a stopped and a running server) never break the next command nor leave a server or
a watchdog that ``db status`` does not report (HEALTHTECH_SIGNAL_ROUNDS=N repeats them N times)."""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import pytest
from helpers import AS_OF, DB_ENV_KEYS, fetch

from healthtech_etl.db import DbConfig
from healthtech_etl.embedded import USERS_FILE, WATCHDOG_LOG, server_state

WATCHDOG = "healthtech_etl.embedded_watchdog"


def command(args: list, cwd: Path, pgdata: Path, idle: Optional[str] = None, wait: bool = True):
    env = {k: v for k, v in os.environ.items() if k not in DB_ENV_KEYS and k != "EMBEDDED_IDLE_MINUTES"}
    env["PGDATA_DIR"] = str(pgdata)
    if idle is not None:
        env["EMBEDDED_IDLE_MINUTES"] = idle
    argv = [sys.executable, "-m", "healthtech_etl.cli", *args]
    if not wait:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def processes(pgdata: Path) -> dict:
    """pid -> arguments of every process naming ``pgdata`` as an argument (servers, watchdogs, pg_ctl)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            args = [part.decode() for part in (entry / "cmdline").read_bytes().split(b"\0") if part]
        except (OSError, ValueError):
            continue
        if str(pgdata) in args:
            found[int(entry.name)] = args
    return found


def accounted_for(pgdata: Path) -> None:
    """Every server and watchdog of ``pgdata`` is the one ``db status`` reports."""
    state = server_state(pgdata)
    found = processes(pgdata)
    servers = {pid for pid, args in found.items() if Path(args[0]).name == "postgres"}
    watchdogs = {pid for pid, args in found.items() if WATCHDOG in args}
    assert servers == ({state.server.pid} if state.running else set()), (state, found)
    assert watchdogs == ({state.watchdog[0]} if state.watchdog else set()), (state, found)


def stop_all(pgdata: Path, cwd: Path) -> None:
    """``db stop --force``, then nothing of ``pgdata`` may be left running."""
    stopped = command(["db", "stop", "--force"], cwd, pgdata)
    assert stopped.returncode == 0, stopped.stderr
    assert processes(pgdata) == {}


def config_of(pgdata: Path) -> DbConfig:
    state = server_state(pgdata)
    assert state.running
    return DbConfig(user="postgres", host=None, unix_socket_dir=state.socket_dir, port=state.server.port,
                    sslmode="disable")


def until(condition, seconds: float = 60) -> bool:
    """Poll ``condition`` until it holds (True) or ``seconds`` pass (False): waiting on the watchdog."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def etl(sample_inputs):
    return ["etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1]), "--as-of", AS_OF,
            "--quiet", "--allow-older"]  # the same files, loaded again by each command on purpose


def test_the_server_outlives_runs_and_db_stop_stops_it(tmp_path, etl):
    pgdata = tmp_path / "pg"
    try:
        status = command(["db", "status"], tmp_path, pgdata)
        assert one_line(status.stdout) == f"embedded PostgreSQL in {pgdata}: not created yet (the first run creates it)"
        assert not pgdata.exists()

        first = command(etl, tmp_path, pgdata)
        assert first.returncode == 0 and first.stderr == "", first.stderr
        state = server_state(pgdata)
        assert state.running and state.server.status == "ready" and state.users == ()
        assert state.watchdog is not None and state.watchdog[1] == 30  # the default idle minutes
        accounted_for(pgdata)
        line = one_line(command(["db", "status"], tmp_path, pgdata).stdout)
        assert line.startswith(f"embedded PostgreSQL in {pgdata}: running (pid {state.server.pid}, socket in ")
        assert line.endswith(f"; stops after 30 idle minutes (watchdog pid {state.watchdog[0]})")

        # The next command reuses the same server and watchdog.
        second = command(etl, tmp_path, pgdata)
        assert second.returncode == 0, second.stderr
        assert replace(server_state(pgdata), last_use=0) == replace(state, last_use=0)
        assert fetch(config_of(pgdata), "SELECT status FROM healthtech.etl_runs") == [["succeeded"]] * 2

        # A run in progress (this process, holding what a run holds): 'db stop' refuses, --force stops.
        with open(pgdata / USERS_FILE) as held:
            fcntl.flock(held, fcntl.LOCK_SH)
            assert server_state(pgdata).users == (os.getpid(),)
            assert f"in use by pid {os.getpid()};" in one_line(command(["db", "status"], tmp_path, pgdata).stdout)
            refused = command(["db", "stop"], tmp_path, pgdata)
            assert refused.returncode == 4
            assert one_line(refused.stderr) == (
                f"healthtech-etl: error: the embedded PostgreSQL in {pgdata} is in use by pid {os.getpid()}: wait "
                "for it to finish, or use 'db stop --force' (its load is rolled back)")
            accounted_for(pgdata)
            assert server_state(pgdata).running
            stopped = command(["db", "stop", "--force"], tmp_path, pgdata)
            assert one_line(stopped.stdout) == f"embedded PostgreSQL in {pgdata}: stopped"
        assert processes(pgdata) == {}
        status = command(["db", "status"], tmp_path, pgdata)
        assert one_line(status.stdout) == f"embedded PostgreSQL in {pgdata}: stopped"

        # A stale postmaster.pid (the server gone, its pid now another live process's) is not trusted.
        lines = [str(os.getpid()), str(pgdata), "1700000000", "5432", str(pgdata), "", "  0  0", "ready   "]
        (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
        assert not server_state(pgdata).running
        again = command(etl, tmp_path, pgdata)
        assert again.returncode == 0, again.stderr
        assert server_state(pgdata).running and server_state(pgdata).server.pid != os.getpid()
        accounted_for(pgdata)
    finally:
        stop_all(pgdata, tmp_path)


def test_the_idle_watchdog_stops_the_server_unless_a_client_is_connected(tmp_path):
    pgdata = tmp_path / "pg"
    try:
        started = command(["db", "start"], tmp_path, pgdata, idle="0.02")  # 1.2 s
        assert started.returncode == 0, started.stderr
        assert "stops after 0.02 idle minutes, or stop it with 'healthtech-etl db stop'" in one_line(started.stdout)
        state = server_state(pgdata)
        assert state.watchdog is not None and state.watchdog[1] == 0.02
        accounted_for(pgdata)

        # A client connected (psql, say): the watchdog counts it as use (and says so with the stamp).
        from healthtech_etl.db import connect

        connection = connect(config_of(pgdata))
        try:
            seen = (pgdata / USERS_FILE).stat().st_mtime
            assert until(lambda: (pgdata / USERS_FILE).stat().st_mtime > seen + 1.3)
            assert server_state(pgdata).running
        finally:
            connection.close()
        assert until(lambda: not processes(pgdata))
        assert not server_state(pgdata).running
        assert "stopped the embedded PostgreSQL in" in (pgdata / WATCHDOG_LOG).read_text()

        # 0: no watchdog, the server runs until 'db stop'; not a number: exit 2 before anything starts.
        never = command(["db", "start"], tmp_path, pgdata, idle="0")
        assert "runs until you stop it with 'healthtech-etl db stop'" in one_line(never.stdout)
        assert server_state(pgdata).watchdog is None
        assert one_line(command(["db", "status"], tmp_path, pgdata).stdout).endswith(
            "; no idle watchdog: it runs until 'db stop'")
        accounted_for(pgdata)
        bad = command(["db", "start"], tmp_path, pgdata, idle="soon")
        assert bad.returncode == 2
        assert one_line(bad.stderr) == ("healthtech-etl: error: EMBEDDED_IDLE_MINUTES must be a number of minutes "
                                        "from 0 (never stop) to 525600")
    finally:
        stop_all(pgdata, tmp_path)


def test_concurrent_first_runs_create_one_server(tmp_path, etl):
    pgdata = tmp_path / "pg"
    try:
        runs = [command(etl, tmp_path, pgdata, wait=False) for _ in range(3)]
        results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
        for run in runs:
            run.stdout.close()
            run.stderr.close()
        assert [code for code, _ in results] == [0, 0, 0], results
        accounted_for(pgdata)
        assert fetch(config_of(pgdata), "SELECT count(*) FROM healthtech.etl_runs WHERE status = 'succeeded'") == [[3]]
    finally:
        stop_all(pgdata, tmp_path)


def test_leftovers_of_a_killed_initdb_are_redone_and_a_foreign_folder_refused(tmp_path):
    pgdata = tmp_path / "pg"
    half_done = tmp_path / ".pg.initdb-999999"
    (half_done / "base").mkdir(parents=True)
    (half_done / "PG_VERSION").write_text("18\n")
    try:
        pgdata.mkdir()  # an empty folder is fine
        started = command(["db", "start"], tmp_path, pgdata)
        assert started.returncode == 0, started.stderr
        assert not half_done.exists() and (pgdata / "PG_VERSION").is_file()
        accounted_for(pgdata)
    finally:
        stop_all(pgdata, tmp_path)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    refused = command(["db", "start"], tmp_path, foreign)
    assert refused.returncode == 4
    assert one_line(refused.stderr) == (
        f"healthtech-etl: error: {foreign} is neither empty nor a PostgreSQL data directory (no PG_VERSION): move "
        "it away, or set PGDATA_DIR to another folder")
    assert (foreign / "todo.txt").read_text() == "keep me"


def test_a_data_dir_too_deep_for_a_socket_gets_its_socket_in_tmp(tmp_path):
    pgdata = tmp_path / ("d" * 60) / ("e" * 60) / "pg"
    try:
        started = command(["db", "start"], tmp_path, pgdata)
        assert started.returncode == 0, started.stderr
        socket_dir = server_state(pgdata).socket_dir
        assert socket_dir is not None and Path(socket_dir).name.startswith("healthtech-pg-")
        assert fetch(config_of(pgdata), "SELECT 1") == [[1]]
    finally:
        stop_all(pgdata, tmp_path)
    Path(socket_dir).rmdir()  # (left for the next start otherwise: empty once the server stopped)


# When the signal comes: a delay after the launch, or after the run was seen creating the data dir
# (initdb's folder appeared) or starting the server (postmaster.pid appeared); from a cold start (no
# data dir), a stopped server, and a running one (the load, its commit, the report).
MOMENTS = [("cold", "launch", 0.1), ("cold", "launch", 0.35), ("cold", "initdb", 0.0), ("cold", "initdb", 0.2),
           ("cold", "server", 0.0), ("cold", "server", 0.1),
           ("stopped", "launch", 0.1), ("stopped", "launch", 0.3), ("stopped", "server", 0.0),
           ("stopped", "server", 0.03), ("stopped", "server", 0.1), ("stopped", "server", 0.3),
           *(("running", "launch", delay) for delay in (0.1, 0.2, 0.3, 0.4, 0.5, 0.65))]
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGKILL)


def prepare(state: str, pgdata: Path, cwd: Path) -> None:
    if state in ("cold", "stopped"):
        stop_all(pgdata, cwd)
    if state == "cold":
        shutil.rmtree(pgdata, ignore_errors=True)
    elif not server_state(pgdata).initialised or state == "running":
        started = command(["db", "start"], cwd, pgdata)
        assert started.returncode == 0, started.stderr
        if state == "stopped":
            stop_all(pgdata, cwd)


def signal_at(process: "subprocess.Popen[str]", trigger: str, delay: float, pgdata: Path, signum: int) -> bool:
    """Send ``signum`` ``delay`` s after ``trigger`` was seen; False if the run ended before."""
    seen = {"launch": lambda: True, "initdb": lambda: any(pgdata.parent.glob(f".{pgdata.name}.initdb-*")),
            "server": lambda: (pgdata / "postmaster.pid").exists()}[trigger]
    deadline = time.monotonic() + 120
    while not seen() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)  # watching for the moment to signal at
    time.sleep(delay)  # the point of the test: a signal at that moment
    if process.poll() is not None:
        return False
    process.send_signal(signum)
    return True


def test_signals_at_many_moments_never_break_the_next_command(tmp_path, etl):
    pgdata = tmp_path / "pg"
    rounds = int(os.environ.get("HEALTHTECH_SIGNAL_ROUNDS", "1"))
    trials = [(*moment, SIGNALS[(index + turn) % len(SIGNALS)]) for turn in range(rounds)
              for index, moment in enumerate(MOMENTS)]
    sent = 0
    try:
        for state, trigger, delay, signum in trials:
            trial = f"{signal.Signals(signum).name} {delay} s after {trigger}, {state} server"
            prepare(state, pgdata, tmp_path)
            killed = command(etl, tmp_path, pgdata, wait=False)
            sent += signal_at(killed, trigger, delay, pgdata, signum)
            code = killed.wait(timeout=120)
            stderr = killed.stderr.read()
            killed.stdout.close()
            killed.stderr.close()
            # Finished first (0), handled (130), or killed before the handler existed (-signal).
            assert code in (0, 130, -signum), (trial, code, stderr)
            if code == 130:
                assert one_line(stderr).startswith(("healthtech-etl: error: interrupted",
                                                    "healthtech-etl: interrupted")), (trial, stderr)

            normal = command(etl, tmp_path, pgdata)
            assert normal.returncode == 0 and normal.stderr == "", (trial, normal.stderr)
            accounted_for(pgdata)
            assert server_state(pgdata).running and server_state(pgdata).watchdog is not None, trial
            assert not list(tmp_path.glob(".pg.initdb-*")), trial  # a killed initdb's folder is gone
    finally:
        stop_all(pgdata, tmp_path)
    assert sent >= len(trials) - 3 * rounds  # (the latest moments of a run may come after its end)
