"""The early pre-scan (sheet_scan.SheetPrefetch), in a forked child and in a thread, against
the extractor's own scans: the same sheet read, the same errors, no child process left."""

import os
import sys

import pytest
from raw_xlsx import date, e, inline, n, s, write_raw_xlsx

from healthtech_etl import clean, sheet_scan
from healthtech_etl.errors import InputFileError
from healthtech_etl.extract import available_readers, read_sheet

APPOINTMENTS = clean.APPOINTMENT_COLUMNS
WAYS = ["thread"] + (["fork"] if sys.platform.startswith("linux") else [])


def workbook(tmp_path, rows: int = 40):
    cells = [[s(c) for c in APPOINTMENTS]]
    cells += [[n(i), n(7), n(1), date(45950 if i % 3 else -18000), e("#N/A") if i % 7 == 0 else inline("confirmed")]
              for i in range(1, rows)]
    return write_raw_xlsx(tmp_path / "a.xlsx", cells)


def frame_of(data):
    return data.frame.astype(object).where(data.frame.notna(), None).values.tolist()


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("large", [False, True])
def test_a_prefetched_read_equals_a_plain_one(tmp_path, monkeypatch, way, large):
    if large:  # a "large" sheet: measured in a pass of its own, literal scan after it
        monkeypatch.setattr(sheet_scan, "MEASURE_FIRST_BYTES", 0)
    path = workbook(tmp_path)
    for reader in available_readers():
        plain = read_sheet(path, APPOINTMENTS, reader=reader, entity="appointments")
        prefetched = sheet_scan.SheetPrefetch(path, None, "appointments", fork=way == "fork")
        early = read_sheet(path, APPOINTMENTS, reader=reader, entity="appointments", prefetched=prefetched)
        assert frame_of(early) == frame_of(plain), reader
        assert early.reader == plain.reader


@pytest.mark.parametrize("way", WAYS)
def test_prefetch_errors_surface_in_the_read(tmp_path, way):
    path = workbook(tmp_path)
    expected = None
    try:
        read_sheet(path, APPOINTMENTS, sheet="Nope", entity="appointments")
    except InputFileError as exc:
        expected = str(exc)
    prefetched = sheet_scan.SheetPrefetch(path, "Nope", "appointments", fork=way == "fork")
    with pytest.raises(InputFileError) as caught:
        read_sheet(path, APPOINTMENTS, sheet="Nope", entity="appointments", prefetched=prefetched)
    assert str(caught.value) == expected and "has no sheet 'Nope'" in expected

    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    prefetched = sheet_scan.SheetPrefetch(broken, None, "appointments", fork=way == "fork")
    with pytest.raises(InputFileError, match="not an xlsx workbook"):
        read_sheet(broken, APPOINTMENTS, entity="appointments", prefetched=prefetched)


def test_a_prefetch_for_another_file_is_not_used(tmp_path):
    path = workbook(tmp_path)
    other = sheet_scan.SheetPrefetch(tmp_path / "missing.xlsx", None, "appointments", fork=False)
    data = read_sheet(path, APPOINTMENTS, entity="appointments", prefetched=other)
    assert len(data.frame) == 39


@pytest.mark.skipif("fork" not in WAYS, reason="the forked prefetch is for Linux")
def test_the_forked_child_is_reaped_or_killed(tmp_path, monkeypatch):
    monkeypatch.setattr(sheet_scan, "MEASURE_FIRST_BYTES", 0)
    path = workbook(tmp_path, rows=20_000)
    done = sheet_scan.SheetPrefetch(path, None, "appointments", fork=True)
    pid = done._source.pid
    read_sheet(path, APPOINTMENTS, entity="appointments", prefetched=done)
    with pytest.raises(ChildProcessError):  # reaped after its last message
        os.waitpid(pid, os.WNOHANG)

    abandoned = sheet_scan.SheetPrefetch(path, None, "appointments", fork=True)
    pid = abandoned._source.pid
    abandoned._source.stop()  # what atexit does when a run ends before the read
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_start_prefetch_only_for_dense_readers(tmp_path):
    path = workbook(tmp_path)
    assert sheet_scan.start_prefetch(path, None, "appointments", "openpyxl") is None
    assert sheet_scan.start_prefetch(tmp_path / "missing.xlsx", None, "appointments", "auto") is None
    dense = [reader for reader in available_readers() if reader in ("fastexcel", "calamine")]
    prefetched = sheet_scan.start_prefetch(path, None, "appointments", "auto")
    assert (prefetched is not None) == bool(dense)
    if prefetched is not None:
        prefetched.result()
        prefetched.literal_into(prefetched.result())
