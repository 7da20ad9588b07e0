"""Run the real CLI in this process with one deterministic fault: a signal sent to ourselves at an
exact point of the load (no timing involved).

    python fault_driver.py SIGNAL POINT -- <healthtech-etl arguments>

POINT is where the signal is raised:
- ``before_load``: just before the load transaction starts (after the report was written);
- ``before_commit``: as the COMMIT message is about to be written (nothing sent);
- ``during_commit``: right after the COMMIT message was flushed to the server, before its answer
  is read (the server commits; the client never hears back);
- ``after_commit``: right after COMMIT returned;
- ``during_copy``: right after the ``COPY healthtech.appointments`` statement was sent.
"""

import os
import signal
import sys
from typing import Any

from healthtech_etl import cli, load, pipeline

_fired = []  # the fault happens once: the ledger check after it must run undisturbed


def _signal(signum: int) -> None:
    if not _fired:
        _fired.append(signum)
        os.kill(os.getpid(), signum)


class FaultySocket:
    """pg8000's buffered socket file, raising the signal when the chosen message goes out."""

    def __init__(self, real: Any, point: str, signum: int) -> None:
        self._real = real
        self._point = point
        self._signum = signum
        self._armed = False

    _last_code = b""

    def write(self, data: Any) -> Any:
        message = bytes(data)
        if len(message) == 1:  # pg8000 < 1.30 writes a message's type byte on its own
            self._last_code = message
        commit = (message[:1] == b"Q" and b"COMMIT" in message) or (
            self._last_code == b"Q" and message.startswith(b"COMMIT"))
        if commit and self._point == "before_commit":
            _signal(self._signum)
        if (commit and self._point == "during_commit") or (
                self._point == "during_copy" and b"COPY healthtech.appointments" in message):
            self._armed = True
        return self._real.write(data)

    def flush(self) -> Any:
        result = self._real.flush()
        if self._armed:
            self._armed = False
            _signal(self._signum)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install(point: str, signum: int) -> None:
    real_connect = load.connect

    def connect(config: Any) -> Any:
        connection = real_connect(config)
        # Every pg8000 version writes through connection._sock (older ones via closures over it).
        connection._sock = FaultySocket(connection._sock, point, signum)
        if point == "after_commit":
            run = connection.run

            def run_then_signal(sql: str, *args: Any, **kwargs: Any) -> Any:
                result = run(sql, *args, **kwargs)
                if sql == "COMMIT":
                    _signal(signum)
                return result

            connection.run = run_then_signal
        return connection

    load.connect = connect
    if point == "before_load":
        real_load_run = pipeline.load_run

        def load_run(*args: Any, **kwargs: Any) -> Any:
            _signal(signum)
            return real_load_run(*args, **kwargs)

        pipeline.load_run = load_run


if __name__ == "__main__":
    signal_name, fault_point, separator, *cli_args = sys.argv[1:]
    assert separator == "--", "usage: fault_driver.py SIGNAL POINT -- ARGS"
    install(fault_point, getattr(signal, signal_name))
    sys.exit(cli.main(cli_args))
