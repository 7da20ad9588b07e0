"""fastexcel's read started early in a forked child (dense_read.SpeculativeRead, through
sheet_scan.SheetPrefetch(read_columns=...)): the same read as the plain path, taken only for a
sheet safe for a dense reader and unchanged by the overlong cut; any failure of the child falls
back to the plain path; no child process is left behind, even when the parent is killed."""

import faulthandler
import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest
from raw_xlsx import date, e, inline, n, s, write_raw_xlsx

from healthtech_etl import clean, dense_read, extract, sheet_scan
from healthtech_etl.extract import available_readers, read_sheet

pytestmark = pytest.mark.skipif(
    "fastexcel" not in available_readers() or not sys.platform.startswith("linux"),
    reason="the early read is fastexcel's, in a forked child (Linux)",
)
APPOINTMENTS = clean.APPOINTMENT_COLUMNS


def workbook(tmp_path, rows: int = 40, name: str = "a.xlsx", **options):
    cells = [[s(c) for c in APPOINTMENTS]]
    cells += [[n(i), n(7), n(1), date(45950 if i % 3 else -18000), e("#N/A") if i % 7 == 0 else inline("confirmed")]
              for i in range(1, rows)]
    return write_raw_xlsx(tmp_path / name, cells, **options)


def read_of(data):
    return {
        "cells": data.frame.astype(object).where(data.frame.notna(), None).values.tolist(),
        "encoded": {name: (codes.tolist(), list(distinct)) for name, (codes, distinct) in data.encoded.items()},
        "reader": data.reader, "blank_rows": data.blank_rows, "skipped": data.skipped_header_rows,
        "extra": data.extra_columns,
    }


def early(path, **options):
    return sheet_scan.SheetPrefetch(path, None, "appointments", fork=True, read_columns=APPOINTMENTS, **options)


def refuse(*args):
    raise AssertionError("the in-process reader ran: the early read was not used")


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (waits up to 10 s for it, without polling)."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([handle], [], [], 10)[0])
    finally:
        os.close(handle)


@pytest.mark.parametrize("large", [False, True])
def test_the_early_read_is_taken_and_equals_the_plain_read(tmp_path, monkeypatch, large):
    if large:  # measured in a pass of its own, the literal scan after it
        monkeypatch.setattr(sheet_scan, "MEASURE_FIRST_BYTES", 0)
        monkeypatch.setattr(extract, "MEASURE_FIRST_BYTES", 0)
    path = workbook(tmp_path, first_row=3, first_column=1)
    plain = read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments")
    prefetched = early(path)
    monkeypatch.setitem(extract._ROW_READERS, "fastexcel", refuse)  # (the child has its own copy)

    taken = read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments", prefetched=prefetched)

    assert read_of(taken) == read_of(plain)
    assert taken.skipped_header_rows == 2 and taken.frame["source_row"].iloc[0] == 4


def test_auto_takes_it_too(tmp_path, monkeypatch):
    path = workbook(tmp_path)
    plain = read_sheet(path, APPOINTMENTS, entity="appointments")
    prefetched = sheet_scan.start_prefetch(path, None, "appointments", "auto", APPOINTMENTS, fork=True)
    monkeypatch.setitem(extract._ROW_READERS, "fastexcel", refuse)
    assert read_of(read_sheet(path, APPOINTMENTS, entity="appointments", prefetched=prefetched)) == read_of(plain)


def test_a_stray_far_cell_kills_the_early_read_and_goes_to_openpyxl(tmp_path):
    """The child may abort on the extent (that is why it is a child): the read goes to the
    streaming reader, as without it, and the child is gone."""
    path = workbook(tmp_path, extra_cells=[("XFD900000", inline("stray"))], dimension="A1:E40")
    plain = read_sheet(path, APPOINTMENTS, entity="appointments")
    prefetched = early(path)
    pid = prefetched._read._work.pid

    taken = read_sheet(path, APPOINTMENTS, entity="appointments", prefetched=prefetched)

    assert taken.reader == plain.reader == "openpyxl"
    assert read_of(taken) == read_of(plain)
    assert gone(pid)


def test_a_failed_child_falls_back_to_the_plain_read(tmp_path, monkeypatch):
    """A child that dies (here: aborts, as a Rust allocation failure does) or raises leaves the
    read to this process."""
    path = workbook(tmp_path)
    plain = read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments")
    parent = os.getpid()
    real = dense_read.read_fastexcel
    def abort():
        faulthandler.disable()  # (pytest's: it would print the child's stack)
        os.abort()

    for failure in (abort, lambda: 1 / 0):
        def in_the_child_only(*args, failure=failure):
            if os.getpid() != parent:
                failure()
            return real(*args)

        monkeypatch.setattr(dense_read, "read_fastexcel", in_the_child_only)
        prefetched = early(path)
        taken = read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments", prefetched=prefetched)
        assert read_of(taken) == read_of(plain)


def test_a_cut_copy_is_read_instead_of_the_early_read(tmp_path, monkeypatch):
    """Overlong text: the readers read a copy with the text cut (see overlong), never the child's
    read of the original."""
    cells = [[s(c) for c in APPOINTMENTS], [n(1), n(7), n(1), date(45950), s("x" * 40_000)],
             [n(2), n(7), n(1), date(45950), s("confirmed")]]
    path = write_raw_xlsx(tmp_path / "long.xlsx", cells)
    plain = read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments")
    prefetched = early(path)
    pid = prefetched._read._work.pid
    taken = read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments", prefetched=prefetched)
    assert read_of(taken) == read_of(plain)
    assert len(taken.frame["status"].iloc[0]) < 40_000  # the cut copy's text
    assert gone(pid)


def test_the_child_is_reaped_after_its_read_and_killed_when_not_needed(tmp_path):
    path = workbook(tmp_path)
    used = early(path)
    pid = used._read._work.pid
    read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments", prefetched=used)
    with pytest.raises(ChildProcessError):  # reaped
        os.waitpid(pid, os.WNOHANG)

    for reader in ("openpyxl", "calamine"):  # another reader: the early read is dropped
        if reader not in available_readers():
            continue
        unused = early(path)
        pid = unused._read._work.pid
        read_sheet(path, APPOINTMENTS, reader=reader, entity="appointments", prefetched=unused)
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_only_fastexcel_gets_an_early_read(tmp_path):
    path = workbook(tmp_path)
    for reader, reads in (("auto", True), ("fastexcel", True), ("calamine", False)):
        prefetched = sheet_scan.start_prefetch(path, None, "appointments", reader, APPOINTMENTS, fork=True)
        assert (prefetched._read is not None) == reads, reader
        prefetched.drop_read()
        prefetched.result()
    assert sheet_scan.start_prefetch(path, None, "appointments", "auto", fork=True)._read is None  # no columns
    # Not forked (another thread runs, or not Linux): no early read, the scans in a thread.
    assert sheet_scan.start_prefetch(path, None, "appointments", "auto", APPOINTMENTS, fork=False)._read is None


def test_children_die_with_a_killed_parent(tmp_path):
    """SIGKILL of the CLI process (nothing of it runs any more) takes its pre-scan and early-read
    children with it: none is left running."""
    path = workbook(tmp_path, rows=60_000)
    script = textwrap.dedent(f"""
        import os, signal, sys
        from healthtech_etl import clean, sheet_scan
        p = sheet_scan.SheetPrefetch({str(path)!r}, None, "appointments", fork=True,
                                     read_columns=clean.APPOINTMENT_COLUMNS)
        print(p._source.pid, p._read._work.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL
    children = [int(pid) for pid in done.stdout.split()]
    assert len(children) == 2
    assert all(gone(pid) for pid in children)


def test_the_memory_cap_is_set_in_the_child_only(tmp_path):
    """The child's address space is capped (a far cell's extent fails there); this process's
    is not touched."""
    import resource

    before = resource.getrlimit(resource.RLIMIT_AS)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        dense_read._cap_memory(100 << 20)
        os.write(write_fd, str(resource.getrlimit(resource.RLIMIT_AS)[0]).encode())
        os._exit(0)
    os.close(write_fd)
    capped = int(os.read(read_fd, 100))
    os.close(read_fd)
    os.waitpid(pid, 0)
    expected = dense_read._CAP_BASE + dense_read._CAP_PER_XML_BYTE * (100 << 20)
    if before[1] != resource.RLIM_INFINITY:
        expected = min(expected, before[1])
    assert capped == expected
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_the_child_judges_the_distinct_values_the_cleaner_sees(tmp_path):
    """With judge_day_first the child also judges each column's distinct values after its read
    (clean.judge_distinct), in the order the cleaner sees them: cleaning with that judgement
    gives what cleaning without it gives."""
    import numpy as np
    import pandas as pd

    path = workbook(tmp_path, rows=300)
    prefetched = early(path, judge_day_first=True)
    pid = prefetched._read._work.pid
    taken = read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments", prefetched=prefetched)
    judged = taken.judged()
    assert gone(pid)
    assert judged is not None and judged[0] is True
    for column, (count, results) in judged[1].items():
        distinct = taken.encoded[column][1]
        expected = clean.judge_distinct(column, pd.Series(distinct[:count], dtype=object), True)
        assert {k: np.asarray(v).tolist() for k, v in results.items()} == \
            {k: np.asarray(v).tolist() for k, v in expected.items()}, column
    known = np.array([1])
    args = (taken.frame, known, __import__("datetime").date(2025, 11, 1))
    with_it = clean.clean_appointments(*args, day_first=True, encoded=taken.encoded, judged=judged)
    without = clean.clean_appointments(*args, day_first=True)
    assert with_it.valid.values.tolist() == without.valid.values.tolist()
    assert with_it.rejected.astype(str).values.tolist() == without.rejected.astype(str).values.tolist()
    assert with_it.stats == without.stats


def test_a_failed_judgement_is_none_and_the_child_is_gone(tmp_path, monkeypatch):
    path = workbook(tmp_path)
    parent = os.getpid()
    real = clean.judge_distinct

    def in_the_child_only(*args):
        if os.getpid() != parent:
            raise MemoryError("no room")
        return real(*args)

    monkeypatch.setattr(clean, "judge_distinct", in_the_child_only)
    prefetched = early(path, judge_day_first=False)
    pid = prefetched._read._work.pid
    taken = read_sheet(path, APPOINTMENTS, reader="fastexcel", entity="appointments", prefetched=prefetched)
    assert taken.judged is not None and taken.judged() is None
    assert gone(pid)
