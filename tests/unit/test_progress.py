"""The progress line: only on a terminal, never with --quiet, rows and rows/s at the end of a stage."""

import io
import re

from healthtech_etl import progress
from healthtech_etl.progress import Progress


class Terminal(io.StringIO):
    def __init__(self, tty: bool = True) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_shown_only_on_a_terminal_and_without_quiet():
    assert progress.wanted(False, Terminal(), Terminal()) is True
    assert progress.wanted(True, Terminal(), Terminal()) is False
    assert progress.wanted(False, Terminal(tty=False), Terminal()) is False  # stdout piped
    assert progress.wanted(False, Terminal(), Terminal(tty=False)) is False  # stderr redirected
    assert progress.wanted(False, object(), object()) is False  # no isatty at all


def test_a_stage_ends_with_rows_and_rate():
    stream = Terminal()
    line = Progress(stream, enabled=True)

    line.start("read", "appointments.xlsx")
    line.done(1_015_000)

    final = stream.getvalue().split("\r\x1b[K")[-1]
    assert re.fullmatch(r"  read +1,015,000 rows in +\d+\.\d\d s \([\d,]+ rows/s\)  appointments\.xlsx\n", final), final


def test_counted_items_pass_through_unchanged_and_are_counted():
    stream = Terminal()
    line = Progress(stream, enabled=True)
    items = list(range(10_001))

    line.start("sample", total=len(items))
    assert list(line.counted(items)) == items
    line.done()

    assert "10,001 rows in" in stream.getvalue()


def test_disabled_progress_writes_nothing_and_wraps_nothing():
    stream = Terminal()
    line = Progress(stream, enabled=False)
    items = [1, 2, 3]

    line.start("read")
    assert line.counted(items) is items
    line.advance(5)
    line.done(3)
    line.stop()

    assert stream.getvalue() == ""


def test_stop_clears_the_line_of_a_failed_stage():
    stream = Terminal()
    line = Progress(stream, enabled=True)

    line.start("load", total=10)
    line.stop()
    line.done(10)  # nothing running any more: no final line

    assert stream.getvalue().endswith("\r\x1b[K") and "rows in" not in stream.getvalue()


def test_module_level_calls_follow_configure():
    stream = Terminal()
    try:
        progress.configure(True, stream)
        progress.start("clean")
        progress.done(42)
        assert "42 rows in" in stream.getvalue()
        progress.configure(False, stream)
        progress.start("clean")
        progress.done(7)
        assert "7 rows in" not in stream.getvalue()
    finally:
        progress.configure(False)
