"""No workbook can make a dense reader (fastexcel, python-calamine) allocate for a stray far
cell: the real extent is measured before they run, whatever the sheet declares and however its
cells are written, on each of the three ways the measurement runs (in the literal scan for a
small sheet, in a pass of its own for a large one, and in the CLI's early prefetch, also with
fastexcel's read started early in a child: that child may abort, the read must not).

A reader that did allocate would abort the whole process, so the dense reads run in a child
process; the test compares what it printed with openpyxl's (streaming) read in this one."""

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_xlsx import inline, n, s, write_raw_xlsx

from healthtech_etl import clean, sheet_scan
from healthtech_etl.extract import available_readers, read_sheet

DOCTORS = clean.DOCTOR_COLUMNS
DENSE = [reader for reader in available_readers() if reader in ("fastexcel", "calamine")]
SHEET = "xl/worksheets/sheet1.xml"

# Runs in the child: read with one reader on one measuring path, print the cells as JSON.
CHILD = r"""
import json, logging, sys
from pathlib import Path
from healthtech_etl import extract, sheet_scan
records = []
logging.getLogger("healthtech_etl").addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r.getMessage())})())
small = sheet_scan.MEASURE_FIRST_BYTES
path = Path(sys.argv[1])
for combo in sys.argv[2:]:
    reader, how = combo.split(":")
    print(combo, file=sys.stderr, flush=True)  # the last one named is the one that failed
    records.clear()
    # "literal": a small sheet, measured in the literal scan; else a "large" one, in a pass of its own.
    extract.MEASURE_FIRST_BYTES = sheet_scan.MEASURE_FIRST_BYTES = small if how == "literal" else 0
    # "early": fastexcel's read also starts in a child of its own (the CLI's fast path, dense_read).
    columns = ("doctor_id", "name", "specialty") if how == "early" else None
    prefetched = sheet_scan.SheetPrefetch(path, None, "doctors", read_columns=columns) if how in ("prefetch", "early") else None
    data = extract.read_sheet(path, ("doctor_id", "name", "specialty"), reader=reader, entity="doctors",
                              prefetched=prefetched)
    frame = data.frame.astype(object).where(data.frame.notna(), None)
    print(json.dumps({"combo": combo, "cells": frame.values.tolist(), "reader": data.reader, "log": list(records)}))
"""


def rewrite_sheet(path: Path, change) -> Path:
    """``path`` with its sheet XML passed through ``change`` (every other member as it was)."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[SHEET] = change(members[SHEET].decode()).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def base(tmp_path: Path, stray: bool = True, dimension: str = "A1:C3") -> Path:
    rows = [[s("doctor_id"), s("name"), s("specialty")], [n(1), s("A"), None], [n(2), s("B"), s("x")]]
    extra = [("XFD100000", inline("stray"))] if stray else []
    return write_raw_xlsx(tmp_path / "d.xlsx", rows, extra_cells=extra, dimension=dimension)


def cells_without_references(xml: str) -> str:
    """A row of 20,000 cells without a reference (a reader places them by position), and a
    far row: a dense reader would allocate 100,000 x 20,000 cells."""
    row = '<row r="4">' + '<c t="inlineStr"><is><t>x</t></is></c>' * 20_000 + "</row>"
    far = '<row r="100000"><c r="A100000" t="inlineStr"><is><t>far</t></is></c></row>'
    return xml.replace("</sheetData>", row + far + "</sheetData>")


VARIANTS = {
    "declared extent hides a far cell": lambda xml: xml,
    "reference after another attribute": lambda xml: xml.replace('<c r="XFD100000" t="inlineStr"', '<c t="inlineStr" r="XFD100000"'),
    "reference after a newline": lambda xml: xml.replace('<c r="XFD100000"', '<c\nr="XFD100000"'),
    "reference in single quotes": lambda xml: xml.replace('<c r="XFD100000"', "<c r='XFD100000'"),
    "cells without references": lambda xml: cells_without_references(xml.replace(
        '<c r="XFD100000" t="inlineStr"><is><t xml:space="preserve">stray</t></is></c>', "")),
}


def dense_reads(path: Path, combos: list) -> list:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), *combos], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"exit {done.returncode} at {done.stderr.strip().splitlines()[-1:]}: {done.stderr[-1500:]}"
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


@pytest.mark.skipif(not DENSE, reason="no dense reader installed (the Glue lanes)")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_stray_far_cell_never_reaches_a_dense_reader(tmp_path, variant):
    path = rewrite_sheet(base(tmp_path, stray=variant != "cells without references"), VARIANTS[variant])
    expected = read_sheet(path, DOCTORS, reader="openpyxl", entity="doctors").frame
    expected = expected.astype(object).where(expected.notna(), None).values.tolist()
    combos = [f"{reader}:{how}" for reader in DENSE for how in ("literal", "measure", "prefetch")]
    combos += ["fastexcel:early"] if "fastexcel" in DENSE and sys.platform.startswith("linux") else []
    results = dense_reads(path, combos)
    assert [result["combo"] for result in results] == combos
    for result in results:
        assert result["cells"] == expected, result["combo"]
        assert result["reader"] == "openpyxl", result["combo"]  # routed to the streaming reader...
        assert any("stray far cell" in line for line in result["log"]), result["combo"]  # ...and said so


@pytest.mark.skipif(not DENSE, reason="no dense reader installed (the Glue lanes)")
def test_a_large_sheet_with_a_hidden_far_cell_is_measured_before_the_dense_read(tmp_path):
    """The real thing, no sizes patched: more XML than the literal scan measures first."""
    rows = [[s("doctor_id"), s("name"), s("specialty")]]
    rows += [[n(i), inline(f"Dr {i:06d} " + "x" * 40), s("Cardiology")] for i in range(1, 70_000)]
    path = write_raw_xlsx(tmp_path / "big.xlsx", rows, extra_cells=[("XFD70001", inline("stray"))],
                          dimension="A1:C70000")
    assert zipfile.ZipFile(path).getinfo(SHEET).file_size > sheet_scan.MEASURE_FIRST_BYTES
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from healthtech_etl.extract import read_sheet; "
         "d = read_sheet(sys.argv[1], ('doctor_id', 'name', 'specialty'), reader=sys.argv[2]); "
         "print(d.reader, len(d.frame), d.frame['doctor_id'].iloc[-1])", str(path), DENSE[0]],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["openpyxl", "69999", "69999"]


def test_plain_sheets_are_measured_in_one_pass(tmp_path, monkeypatch):
    """A sheet written the plain way takes only the fast pass, and stays with the dense reader."""
    path = base(tmp_path, stray=False, dimension=None)
    scan = sheet_scan.scan_sheet(path, None, "doctors")
    passes = []
    real = sheet_scan._row_parts
    monkeypatch.setattr(sheet_scan, "_row_parts", lambda *args: (passes.append(1), real(*args))[1])
    sheet_scan.measure_extent(path, scan)
    assert passes == [] and scan.measured and scan.dense_ok and scan.width == 26 and scan.last_row == 3


# --- the fast pass's pattern: Arrow's RE2 and Python's re agree --------------------------------

pieces = st.sampled_from([
    '<c r="A1">', '<c r="AB12"', "<c>", "<c/>", "<c\n", '<c s="1" r="B2"', "<c r='C3'", '<c r ="D4"', "<row r=\"5\">",
    "<row>", "<row\tr=\"6\"", '<row spans="1:3" r="7"', "<col ", "<color ", "<rowBreaks", "<v>1</v>", "</c>", "</row>",
    "é", "\u00ff", " ", "r", "=", '"', "A", "Z", "<", "c",
])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(pieces, max_size=30).map("".join), st.binary(max_size=8))
def test_the_unusual_cell_pattern_is_the_same_in_re2_and_re(text, noise):
    data = text.encode() + noise
    plain = sheet_scan._UNUSUAL_RE.search(data) is not None
    assert sheet_scan._has_unusual(data) == plain
    # and the plain path is the reference the pattern describes
    expected = re.search(sheet_scan._UNUSUAL.decode("latin-1"), data.decode("latin-1")) is not None
    assert plain == expected


def test_the_fast_pass_uses_re2_when_arrow_is_usable(monkeypatch):
    arrow = sheet_scan._re2()
    if arrow is None:
        pytest.skip("no pyarrow 7+: the plain path is the only one")
    calls = []
    real = arrow[1].match_substring_regex
    monkeypatch.setattr(arrow[1], "match_substring_regex", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    assert sheet_scan._has_unusual(b'<row r="1"><c r="AA1">') and calls


# --- the one-pass extent and literal scan (beside the early read): RE2 slices vs plain searches --

cell_pieces = st.sampled_from([
    '<c r="A{r}"><v>-5</v></c>', '<c r="B{r}" s="1"><v>0.25</v></c>', '<c r="C{r}"><v>1E+20</v></c>',
    '<c r="D{r}"><v>1.5E-7</v></c>', '<c r="E{r}" t="e"><v>#N/A</v></c>', '<c r="A{r}" t="b"><v>1</v></c>',
    '<c r="B{r}" t="d"><v>2025-10-21</v></c>', '<c r="C{r}"><v>104</v></c>', '<c r="D{r}" t="s"><v>0</v></c>',
    '<c r="AA{r}"><v>1</v></c>', '<c t="n" r="A{r}"><v>-1</v></c>', "<c><v>7</v></c>",
    '<c r="E{r}" t="inlineStr"><is><t>E+ t="e" &lt;v&gt;-</t></is></c>', '<c r="A{r}"/>',
])


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(cell_pieces, max_size=6), min_size=1, max_size=60), st.sampled_from([1, 7, 64, 4096]))
def test_literal_cells_are_the_same_with_re2_slices_and_plain_searches(rows, slice_size):
    part = "".join(f'<row r="{r}">' + "".join(c.format(r=r) for c in cells) + "</row>"
                   for r, cells in enumerate(rows, start=1)).encode()
    results = []
    for arrow in (True, False):
        scan = sheet_scan.SheetScan(sheet_names=["s"], sheet_name="s", date_styles={"1"})
        saved, saved_slice = sheet_scan._RE2, sheet_scan._SLICE
        sheet_scan._RE2, sheet_scan._SLICE = (False if arrow else None), slice_size
        try:
            if arrow and sheet_scan._re2() is None:
                return  # no pyarrow 7+: the plain path is the only one
            unusual = sheet_scan._literal_cells(part, scan, unusual=True)
        finally:
            sheet_scan._RE2, sheet_scan._SLICE = saved, saved_slice
        results.append((unusual, scan.corrections))
    assert results[0] == results[1]
    assert results[1][0] == (sheet_scan._UNUSUAL_RE.search(part) is not None)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_pass_measures_and_renders_as_the_two_passes(tmp_path, variant):
    path = rewrite_sheet(base(tmp_path, stray=variant != "cells without references"), VARIANTS[variant])
    two = sheet_scan.scan_sheet(path, None, "doctors")
    sheet_scan.measure_extent(path, two)
    sheet_scan.literal_scan(path, two)
    one = sheet_scan.extent_and_literal_scan(path, sheet_scan.scan_sheet(path, None, "doctors"), "doctors")
    assert (one.dense_ok, one.last_row, one.width, one.cell_count, one.corrections) == \
        (two.dense_ok, two.last_row, two.width, two.cell_count, two.corrections)
    assert one.measured and one.literal and not one.dense_ok
