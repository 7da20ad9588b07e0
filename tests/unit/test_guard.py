"""The guard against hostile packages: every bomb from the hostile-input review is refused with
one line (exit 3), in seconds, under 1 GiB, measured in a child process that really reads it."""

import os
import re
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from raw_xlsx import n, s, stream_into, write_raw_xlsx

from healthtech_etl import guard
from healthtech_etl.errors import InputFileError

COLUMNS = ("id", "name")
ROWS = [[s("id"), s("name")], [n(1), s("a")], [n(2), s("b")]]
GIB = 1 << 30
SHEET = "xl/worksheets/sheet1.xml"

_CHILD = """
import sys
from healthtech_etl.read import read_sheet
try:
    frame = read_sheet(sys.argv[1], ("id", "name")).frame
    print("read", len(frame))
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def read_in_child(path: Path) -> tuple[str, float, int]:
    """(what the child printed, seconds, its peak RSS in bytes)."""
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    out, err = child.stdout.read(), child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, err
    assert err == "", err  # nothing from the reader on stderr (no Rust backtrace)
    return out.strip(), time.monotonic() - started, usage.ru_maxrss * 1024


def assert_refused(path: Path, message: str, seconds: float = 30) -> None:
    out, took, peak = read_in_child(path)
    assert out.startswith("InputFileError") and message in out, out
    assert "\n" not in out
    assert took < seconds and peak < GIB, (took, peak)


def workbook(tmp_path: Path, **kwargs) -> Path:
    return write_raw_xlsx(tmp_path / "w.xlsx", ROWS, **kwargs)


@pytest.mark.parametrize("ref, message", [
    ("XFD1048576", "a stray cell far from the data"),  # the 2 KB far-cell workbook
    ("Z1048576", "a stray cell far from the data"),
    ("A40000000", "row number 40,000,000 is outside Excel's"),
    ("A99999999999", "row number 99,999,999,999 is outside Excel's"),
    ("A99999999999999999999999", "a row number is outside Excel's"),  # past int64
    ("XFE1", "past Excel's last column"),
])
def test_far_cells_are_refused(tmp_path, ref, message):
    assert_refused(workbook(tmp_path, extra_cells=[(ref, s("x"))]), message)


def test_a_far_cell_with_attributes_reordered_quoted_and_namespaced_is_refused(tmp_path):
    path = workbook(tmp_path, extra_cells=[("XFD1048576", s("x"))])
    stream_into(path, SHEET, b'<c r="XFD1048576" t="s">', [b"<c  t='s'   r = 'XFD1048576' >"])
    assert_refused(path, "a stray cell far from the data")
    path = workbook(tmp_path, extra_cells=[("A1048576", s("x"))])
    with zipfile.ZipFile(path) as archive:
        xml = archive.read(SHEET)
    prefixed = xml.replace(b"<sheetData", b"<x:sheetData").replace(b"</sheetData", b"</x:sheetData") \
        .replace(b"<row", b"<x:row").replace(b"</row", b"</x:row").replace(b"<c ", b"<x:c ").replace(b"</c>", b"</x:c>") \
        .replace(b"<worksheet ", b'<worksheet xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main" ')
    stream_into(path, SHEET, xml, [prefixed.replace(b'x:c r="A1048576"', b'x:c r="XFD1048576"')])
    assert_refused(path, "a stray cell far from the data")


def test_cells_without_references_count_along_their_row(tmp_path):
    path = workbook(tmp_path, extra_cells=[("A1048576", s("x"))])  # one column: 1M cells, allowed
    assert read_in_child(path)[0] == "read 3"
    stream_into(path, SHEET, b'<c r="B3" t="s">', [b'<c t="s">' * 1 + b"<v>0</v></c>" + b"<c><v>1</v></c>" * 40 + b'<c t="s">'])
    assert_refused(path, "a stray cell far from the data")


def test_a_member_that_inflates_past_its_header_is_counted_and_refused(tmp_path):
    """The header says 8 MB; the stream inflates to 3 GiB: refused at the 2 GiB cap."""
    path = workbook(tmp_path)
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    head, tail = members[SHEET].split(b"</sheetData>")

    def segment(data: bytes, last: bool = False) -> bytes:  # a deflate segment that stands alone
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        return packer.compress(data) + packer.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)

    padded = segment((b"<x>" + b" " * (4 << 20) + b"</x>") * 16)  # 64 MiB, never 8 MiB without a tag
    body = [segment(head), *[padded] * 48, segment(b"</sheetData>" + tail, last=True)]
    write_zip_lying(path, members, SHEET, b"".join(body), declared=8 << 20)
    assert_refused(path, "inflates past 2,147,483,648 bytes")


def test_a_gigabyte_of_whitespace_after_the_data_is_refused_in_seconds(tmp_path):
    path = workbook(tmp_path)
    stream_into(path, SHEET, b"</sheetData>", [b"</sheetData>", *([b" " * (64 << 20)] * 16)])
    assert_refused(path, "over 8,388,608 bytes without a tag", seconds=10)


def test_thirty_million_tiny_shared_strings_are_refused(tmp_path):
    path = workbook(tmp_path)
    one_million = b"<si><t>a</t></si>" * 1_000_000
    stream_into(path, "xl/sharedStrings.xml", b"</sst>", [one_million] * 30 + [b"</sst>"])
    assert_refused(path, "more than 8,000,000 shared strings")


def test_a_gigabyte_styles_part_is_refused(tmp_path):
    path = workbook(tmp_path)
    stream_into(path, "xl/styles.xml", b"</styleSheet>", [b"<x/>" * (16 << 20)] * 16 + [b"</styleSheet>"])
    assert_refused(path, "xl/styles.xml inflates past 67,108,864 bytes")


def test_a_300_mb_text_is_refused_not_buffered(tmp_path):
    path = workbook(tmp_path)
    stream_into(path, "xl/sharedStrings.xml", b"<t xml:space=\"preserve\">a</t>",
                [b"<t xml:space=\"preserve\">"] + [b"a" * (30 << 20)] * 10 + [b"</t>"])
    assert_refused(path, "over 8,388,608 bytes without a tag")


def test_a_repeated_row_number_is_refused(tmp_path):
    path = workbook(tmp_path)
    stream_into(path, SHEET, b'<row r="3">', [b'<row r="2">'])
    assert_refused(path, "row 2 is written twice")


def test_limits_are_checked_in_process_too(tmp_path):
    path = workbook(tmp_path, extra_cells=[("Z90", s("x"))])
    scan = guard.check_workbook(path, None, "doctors")
    assert list(scan.rows) == [1, 2, 3, 90] and scan.in_order and scan.letters == {b"A", b"B", b"Z"}
    with pytest.raises(InputFileError, match="span 90 rows x 26 columns"):
        guard.check_workbook(path, None, "doctors", guard.Limits(grid_cells=10))
    with pytest.raises(InputFileError, match="is damaged"):
        stream_into(path, SHEET, b"<sheetData>", [b"<sheetData>"])
        raw = path.read_bytes()
        start = raw.index(b"xl/worksheets/sheet1.xml") + len(SHEET)
        path.write_bytes(raw[:start] + b"\xff" * 40 + raw[start + 40:])
        guard.check_workbook(path, None, "doctors")


def write_zip_lying(path: Path, members: dict, liar: str, deflated: bytes, declared: int) -> None:
    """A zip written by hand: member ``liar`` holds ``deflated``, its headers declare ``declared``
    bytes (and a CRC of nothing); the other members are honest."""
    entries = []
    for name, data in members.items():
        if name == liar:
            entries.append((name.encode(), deflated, declared, 0))
        else:
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            entries.append((name.encode(), packer.compress(data) + packer.flush(), len(data), zlib.crc32(data)))
    local, central = bytearray(), bytearray()
    for name, body, size, crc in entries:
        fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0, crc, len(body), size)
        central += b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0,
                                                                                 len(local)) + name
        local += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name + body
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(entries), len(entries), len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))


def test_the_sheet_cap_comes_from_the_environment(tmp_path, monkeypatch):
    path = workbook(tmp_path)
    monkeypatch.setenv("ETL_MAX_SHEET_XML_BYTES", "100")
    from healthtech_etl.errors import ConfigError
    from healthtech_etl.read import read_sheet

    with pytest.raises(InputFileError, match="inflates past 100 bytes .*ETL_MAX_SHEET_XML_BYTES"):
        read_sheet(path, COLUMNS)
    monkeypatch.setenv("ETL_MAX_SHEET_XML_BYTES", "2G")
    with pytest.raises(ConfigError, match="ETL_MAX_SHEET_XML_BYTES must be a whole number"):
        read_sheet(path, COLUMNS)


_REFERENCE_CELL = re.compile(rb'<(?:x:)?c\b(?:[^>]*?\sr\s*=\s*["\']\$?([A-Za-z]+))?')
_CELL_FORMS = st.sampled_from([b'<c r="{L}{R}"><v>1</v></c>', b'<c s="1" r="{L}{R}"/>', b"<c r='${L}{R}'/>",
                               b'<c r="{l}{R}" t="n"/>', b"<c><v>2</v></c>", b'<c\tr = "{L}{R}"/>'])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_CELL_FORMS, st.sampled_from(["A", "B", "Z", "AA", "XFD", "C"])), min_size=1, max_size=40),
       st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=4))
def test_the_cell_scan_agrees_with_matching_every_cell(cells, cuts):
    """The scan skips cells written <c r="X1"> with letters X already seen; whatever the forms and
    wherever the pieces are cut (between cells), its letters and unreferenced count are those of
    matching every cell with the full pattern."""
    written = [form.replace(b"{L}", letters.encode()).replace(b"{l}", letters.lower().encode())
               .replace(b"{R}", str(row).encode()) for row, (form, letters) in enumerate(cells, 1)]
    scan = guard.SheetScan("s", SHEET)
    bounds = sorted({0, len(written), *(cut % len(written) for cut in cuts)})
    for start, end in zip(bounds, bounds[1:]):
        guard._scan_piece(b"<sheetData><row r=\"1\">" * (start == 0) + b"".join(written[start:end]), scan)
    expected = _REFERENCE_CELL.findall(b"".join(written))
    assert scan.letters - {b""} == set(expected) - {b""}
    assert scan.unreferenced == expected.count(b"")


def test_a_piece_with_many_unusual_cells_is_matched_in_full():
    scan = guard.SheetScan("s", SHEET)
    guard._scan_piece(b'<sheetData><row r="1"><c r="A1"/>', scan)
    guard._scan_piece(b"<c><v>1</v></c>" * 1100 + b'<c r="ZZ5"/><c r="A6"/>', scan)
    assert scan.letters - {b""} == {b"A", b"ZZ"} and scan.unreferenced == 1100
