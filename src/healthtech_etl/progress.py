"""Progress of long work on a terminal: one stderr line per stage with rows and rows/s.

Only when the CLI turns it on (stdout and stderr terminals, no ``--quiet``). A daemon thread redraws
the line four times a second; the work only bumps an integer. No dependency (Glue has no tqdm).
"""

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Optional, TextIO, TypeVar

T = TypeVar("T")

_REDRAW_SECONDS = 0.25
_COUNT_EVERY = 4096  # rows between counter updates in `counted` (cheap, still smooth)


class Progress:
    """A stage line on ``stream``: ``start`` it, optionally ``advance`` it, ``done`` it."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self._lock = threading.Lock()
        self._stage: Optional[str] = None
        self._total: Optional[int] = None
        self._what, self._rows, self._started = "", 0, 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, stage: str, what: str = "", total: Optional[int] = None) -> None:
        """Begin ``stage`` (e.g. "read"); ``total`` rows when known in advance."""
        if not self.enabled:
            return
        self._finish_thread()
        with self._lock:
            self._stage, self._what, self._rows, self._total = stage, what, 0, total
            self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._redraw_loop, name="healthtech-progress", daemon=True)
        self._thread.start()

    def advance(self, rows: int) -> None:
        """``rows`` more rows done in the current stage."""
        if self.enabled:
            self._rows += rows

    def done(self, rows: Optional[int] = None, note: str = "") -> None:
        """End the current stage: the final line with rows and rows/s stays on screen."""
        if not self.enabled or self._stage is None:
            return
        self._finish_thread()
        elapsed = time.perf_counter() - self._started
        count = self._rows if rows is None else rows
        line = f"  {self._stage:<6} {count:>11,} rows in {elapsed:6.2f} s ({_rate(count, elapsed)})"
        self._write(line + (f"  {note or self._what}" if note or self._what else ""), final=True)
        self._stage = None

    def stop(self) -> None:
        """Abandon the current stage (the run failed): stop redrawing and clear the line."""
        if self.enabled and self._stage is not None:
            self._finish_thread()
            self._write("", final=False)
            self._stage = None

    def counted(self, items: Iterable[T]) -> Iterable[T]:
        """``items`` unchanged; when enabled, counted into the current stage as they pass."""
        return self._count(items) if self.enabled else items

    def _count(self, items: Iterable[T]) -> Iterator[T]:
        pending = 0
        for item in items:
            yield item
            pending += 1
            if pending == _COUNT_EVERY:
                self._rows += pending
                pending = 0
        self._rows += pending

    def _finish_thread(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _redraw_loop(self) -> None:
        while not self._stop.wait(_REDRAW_SECONDS):
            elapsed = time.perf_counter() - self._started
            rows = self._rows
            parts = [f"  {self._stage:<6} "]
            if rows:
                parts.append(f"{rows:>11,} rows" + (f" of {self._total:,}" if self._total else "")
                             + f" ({_rate(rows, elapsed)})")
            elif self._total:
                parts.append(f"{self._total:>11,} rows")
            parts.append(f"  {elapsed:5.1f} s  {self._what}")
            self._write("".join(parts), final=False)

    def _write(self, line: str, final: bool) -> None:
        with self._lock:
            try:
                # \r + clear-to-end-of-line: the running line is redrawn in place.
                self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
                self.stream.flush()
            except (OSError, ValueError):  # a closed terminal must not fail the run
                self.enabled = False


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s" if seconds > 0 else "- rows/s"


def wanted(quiet: bool, stdout: Any = None, stderr: Any = None) -> bool:
    """Progress is shown only on a terminal (stdout and stderr) and without ``--quiet``."""
    return (not quiet and _isatty(sys.stdout if stdout is None else stdout)
            and _isatty(sys.stderr if stderr is None else stderr))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


_current = Progress(sys.stderr, enabled=False)


def configure(enabled: bool, stream: Optional[TextIO] = None) -> Progress:
    """Set the process-wide progress display (the CLI calls this once)."""
    global _current
    _current.stop()
    _current = Progress(stream or sys.stderr, enabled)
    return _current


def current() -> Progress:
    return _current


def start(stage: str, what: str = "", total: Optional[int] = None) -> None:
    _current.start(stage, what, total)


def done(rows: Optional[int] = None, note: str = "") -> None:
    _current.done(rows, note)


def counted(items: Iterable[T]) -> Iterable[T]:
    return _current.counted(items)
