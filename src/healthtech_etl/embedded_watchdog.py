"""The idle watchdog of the embedded PostgreSQL: ``python -m healthtech_etl.embedded_watchdog PGDATA
MINUTES``, started detached by a command (embedded.start_server). It stops the server once nothing
used it for MINUTES: no run holds USERS_FILE (whose mtime is the last use) and no other client
(``psql``...) is connected. It exits when the server is gone; ``db stop`` ends it first. One per
data dir: the command that starts it registers it in WATCHDOG_FILE, under the lock."""

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from .db import close_quietly, connect
from .db_config import DbConfig
from .embedded import USERS_FILE, exclusive, no_users, postmaster, retire_watchdog, stop_postmaster, watchdog

BUSY_RECHECK_SECONDS = 60.0  # while in use: how late the idle clock may start


def other_clients(pgdata: Path) -> bool:
    """Whether a client other than this one is connected (True when the server cannot tell)."""
    server = postmaster(pgdata)
    connection = None
    if server is None:
        return True
    try:
        connection = connect(DbConfig(host=None, port=server.port, unix_socket_dir=server.socket_dir,
                                      connect_timeout=5, source="the idle watchdog"))
        rows = connection.run("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                              "AND pid <> pg_backend_pid()")
        return bool(rows[0][0])
    except Exception:  # starting, stopping, full: in use as far as we know
        return True
    finally:
        close_quietly(connection)


def check(pgdata: Path, idle_seconds: float) -> Optional[float]:
    """Stop the server if idle long enough. Seconds until the next check; None: nothing left to watch."""
    with exclusive(pgdata):
        if postmaster(pgdata) is None:
            retire_watchdog(pgdata, os.getpid())
            return None
        users = pgdata / USERS_FILE
        with no_users(pgdata) as free:
            if not free or other_clients(pgdata):
                os.utime(users)  # in use now: the idle clock starts afresh
                return min(idle_seconds, BUSY_RECHECK_SECONDS)
            idle_for = time.time() - users.stat().st_mtime
            if idle_for < idle_seconds:
                return idle_seconds - idle_for
            stop_postmaster(pgdata)
            retire_watchdog(pgdata, os.getpid())
    print(f"{datetime.now().isoformat(timespec='seconds')} stopped the embedded PostgreSQL in {pgdata} after "
          f"{idle_for / 60:.1f} idle minutes", file=sys.stderr, flush=True)
    return None


def main(argv: list) -> int:
    pgdata, minutes = Path(argv[0]), float(argv[1])
    with exclusive(pgdata):  # registered by the command that started it, unless that one was killed
        if (watchdog(pgdata) or (0,))[0] != os.getpid():
            return 0
    wait: Optional[float] = minutes * 60
    idle_seconds = minutes * 60
    while wait is not None:
        time.sleep(max(wait, 0.05))
        wait = check(pgdata, idle_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
