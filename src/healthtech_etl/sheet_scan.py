"""A pre-scan of one sheet's XML, run before any reader touches the workbook, and a full
streaming scan run only when a workbook holds cells some reader gets wrong.

The quick scan (:func:`scan_sheet`) reads the package's directory, the styles and the first
kilobytes of the sheet XML. It decides:

* **size**: the sheet XML must stay under a limit (a zip bomb is exit 3, not an out-of-memory
  kill): the declared size here, the bytes actually inflated in the full scan;
* **shape**: how many cells a *dense* reader (fastexcel, python-calamine) would allocate for the
  sheet's extent. A stray cell at ``XFD1048576`` makes them allocate billions of cells and abort
  the process; such a sheet goes to the streaming reader. Before a dense reader runs, the
  real extent is always measured (:func:`measure_extent`, one pass over the XML: ~0.25 s for
  a 1M-row sheet with ISA-L, see :mod:`.inflate`); a declared ``<dimension>`` is never
  trusted alone, since it can hide a stray far cell.

The full scan (:func:`full_scan`) finds the **cells no reader renders exactly**: error values,
booleans, numbers the Rust readers round or print their own way (integers past 2**53,
fractions, exponents), date-styled numbers outside Excel's date range. Each is rendered here
from its stored XML, once, by :func:`render_raw`, and the extractor puts that rendering over
whatever the reader made of it. Only regular-expression searches (C code) touch every byte;
Python sees only the rare matches. It costs about a fifth of a fastexcel read, so the
extractor runs it only when the cells read hold a trace of such a cell (see
``extract._needs_full_scan``).
"""

import atexit
import itertools
import os
import pickle
import re
import signal
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from xml.etree import ElementTree

from .errors import InputFileError
from .inflate import member_chunks

if TYPE_CHECKING:
    from .dense_read import ArrowRead, SpeculativeRead

# Cells that are present but not a value of any column's type (error cells, booleans, numbers
# that are not exact): the reader's text gets this prefix, the cleaner rejects them as
# invalid_<column>, and the raw cell shown in rejections drops it. U+FFFF is a non-character:
# it cannot appear in XML text, so no text cell starts with it.
NOT_A_VALUE = "\uffff"
MAX_SHEET_XML_BYTES = 2 * 1024**3
MAX_SHEET_XML_ENV = "ETL_MAX_SHEET_XML_BYTES"
EXACT_INTEGER_LIMIT = 2**53  # an Excel number is a double: integers at or past this are not exact
_LAST_DATE_SERIAL = 2958466  # 10000-01-01: Excel's dates end the day before
_FIRST_DATE_SERIAL = -693593  # 0001-01-01 counted back from 1899-12-30
_CHUNK = 8 << 20
_HEAD = 256 << 10  # the quick scan reads this much sheet XML: the dimension and the first rows
_DENSE_TRUSTED = 30_000_000  # an extent up to this many cells is allocated as is
# Sheets with at most this much XML get the literal scan (which then measures too) before a
# dense reader runs: one pass, a few hundredths of a second. Larger ones get a measuring pass
# first and the literal scan beside the reader (it would cost more than the reader saves).
MEASURE_FIRST_BYTES = 8 << 20
_DIMENSION = re.compile(rb'<dimension\b[^>]*\bref="([A-Z]{1,3})?([0-9]{1,7})?(?::([A-Z]{1,3})([0-9]{1,7}))?"')
_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_REL_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_FORMULA = rb"(?:<f\b[^>]*/>|<f\b[^>]*>[^<]*</f>)?"
_TYPED = re.compile(rb'<c\b(?=[^>]*\bt="(?:e|b|d)")([^>]*?)(?:/>|>(.*?)</c>)', re.S)
_REF = re.compile(r'\br="([A-Z]{1,3})([0-9]{1,7})"')
_TYPE = re.compile(r'\bt="([a-zA-Z]+)"')
_STYLE = re.compile(r'\bs="([0-9]+)"')
_VALUE = re.compile(rb"<v>([^<]*)</v>")
_WIDE = re.compile(rb'<c\s[^>]*?\br="([A-Z]{2,3})[0-9]')
_CELL_REF = re.compile(rb'<c\s[^>]*?\br="[A-Z]')
# Rows and cells not written as ``<row r="N"`` / ``<c r="A1"`` (one letter), as Excel,
# LibreOffice and openpyxl write them: a reference past column Z, or one the fast pass cannot
# read (attributes in another order, other whitespace or quotes, none). No other element of a
# sheet is named ``c`` or ``row`` (``<col``, ``<color``, ``<rowBreaks`` do not match).
_UNUSUAL = (rb'<c r="[A-Z][A-Z]|<c[>/\t\n\r]|<c [^r]|<c r[^=]|<c r=[^"]'
            rb'|<row[>/\t\n\r]|<row [^r]|<row r[^=]|<row r=[^"]')
_CARRY = 64
_UNUSUAL_RE = re.compile(_UNUSUAL)
_UNUSUAL_TEXT = _UNUSUAL.decode()
_MAX_COLUMNS = 16384
_LAST_ROW = re.compile(rb'<row\b[^>]*?\br="([0-9]+)"')


@dataclass
class SheetScan:
    """What the pre-scan found (see the module docstring)."""

    sheet_names: list[str]
    sheet_name: str
    xml_bytes: int = 0
    cell_count: int = 0
    last_row: int = 0
    width: int = 0
    # (spreadsheet row, 0-based column) -> exact rendering of a cell readers get wrong.
    corrections: dict[tuple[int, int], str] = field(default_factory=dict)
    # Raw XML of the first rows (header search, column offsets).
    head_xml: bytes = b""
    full: bool = False  # the full scan ran: every correction is known
    measured: bool = False  # cell_count, last_row and width are the real ones (not the declared)
    literal: bool = False  # the literal scan ran
    member: str = ""
    declared_bytes: int = 0
    compressed_bytes: int = 0
    date_styles: set[str] = field(default_factory=set)

    @property
    def dense_cells(self) -> int:
        """Cells a dense reader allocates for the sheet's extent."""
        return self.last_row * max(self.width, 1)

    @property
    def dense_ok(self) -> bool:
        """Whether a dense reader's allocation follows the real data (not a stray far cell)."""
        if not self.measured:
            return self.dense_cells <= _DENSE_TRUSTED
        return self.dense_cells <= max(6 * self.cell_count + 1_000_000, _DENSE_TRUSTED)

    def first_valued_column(self, row: int) -> Optional[int]:
        """0-based column of the first cell holding a value in spreadsheet row ``row``."""
        match = re.search(rb'<row\b[^>]*?\br="%d"[^>]*>(.*?)</row>' % row, self.head_xml, re.S)
        if match is None:
            return None
        for cell in re.finditer(rb'<c\b([^>]*?)(?:/>|>(.*?)</c>)', match.group(1), re.S):
            if cell.group(2) and (b"<v>" in cell.group(2) or b"<is>" in cell.group(2)):
                ref = _REF.search(cell.group(1).decode("utf-8", "replace"))
                return column_index(ref.group(1)) if ref else None
        return None


def max_sheet_bytes() -> int:
    """The decompressed sheet XML limit: ``ETL_MAX_SHEET_XML_BYTES`` or 2 GiB."""
    text = os.environ.get(MAX_SHEET_XML_ENV, "").strip()
    if not text:
        return MAX_SHEET_XML_BYTES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        from .errors import ConfigError

        raise ConfigError(f"{MAX_SHEET_XML_ENV} must be a positive number of bytes (got {text[:40]!r})")
    return value


def column_index(letters: str) -> int:
    """``A`` -> 0, ``XFD`` -> 16383."""
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    return index - 1


def scan_sheet(path: Path, sheet: Optional[str], entity: str, limit: Optional[int] = None,
               date_styles: bool = True) -> SheetScan:
    """Scan ``sheet`` (or the first sheet) of the workbook at ``path``. ``date_styles``: False
    leaves :attr:`SheetScan.date_styles` to :func:`read_date_styles` (it imports openpyxl).

    Raises :class:`InputFileError` for a file that is not an xlsx package, an unknown sheet,
    or sheet XML over ``limit`` bytes."""
    limit = max_sheet_bytes() if limit is None else limit
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputFileError(f"cannot read {entity} file {Path(path).name}: not an xlsx workbook ({exc})") from exc
    with archive:
        try:
            names, targets = _sheets(archive)
        except (KeyError, ElementTree.ParseError, zipfile.BadZipFile) as exc:
            raise InputFileError(f"cannot read {entity} file {Path(path).name}: {type(exc).__name__}: {exc}") from exc
        if not names:
            raise InputFileError(f"{Path(path).name} has no sheets")
        if sheet is not None and sheet not in names:
            raise InputFileError(f"{Path(path).name} has no sheet {sheet!r} (sheets: {', '.join(names)})")
        name = sheet if sheet is not None else names[0]
        member = targets[names.index(name)]
        scan = SheetScan(sheet_names=names, sheet_name=name)
        try:
            info = archive.getinfo(member)
        except KeyError as exc:
            raise InputFileError(f"cannot read {entity} file {Path(path).name}: sheet {name!r} is missing") from exc
        if info.file_size > limit:
            raise InputFileError(_too_large(entity, path, name, info.file_size, limit))
        scan.member, scan.declared_bytes, scan.compressed_bytes = member, info.file_size, info.compress_size
        strings = next((item for item in archive.infolist() if item.filename == "xl/sharedStrings.xml"), None)
        if strings is not None and strings.file_size > limit:  # every reader loads it whole
            raise InputFileError(_too_large(entity, path, name, strings.file_size, limit, "shared strings"))
        if date_styles:
            scan.date_styles = _date_styles(archive)
        with archive.open(member) as stream:
            scan.head_xml = stream.read(_HEAD)
        dimension = _DIMENSION.search(scan.head_xml)
        if dimension and dimension.group(3):  # what is declared; measured before a dense read
            scan.last_row = int(dimension.group(4))
            scan.width = column_index(dimension.group(3).decode()) + 1
    return scan


# Byte strings found in every cell the literal scan renders itself: negative numbers, numbers
# under 1 (a date serial under 1 is no date), exponents, errors, booleans, ISO dates. Not
# "<v>0<": shared string 0 is referenced that way, possibly by every other cell; a date cell
# holding 0 leaves a trace instead (a bare time, or 1899-12-30).
_LITERALS = (b"<v>-", b"<v>0.", b"E+", b"E-", b't="e"', b't="b"', b't="d"')


_LITERAL_RE = re.compile(rb'<v>-|<v>0\.|E\+|E-|t="[ebd]"')  # the same byte strings as _LITERALS
# Arrow's RE2 finds the slices (row-aligned, about this long) holding a literal or an unusual
# row or cell in one pass; Python looks only inside those.
_SLICE = 4096
_SLICE_PATTERN = "(?:" + _LITERAL_RE.pattern.decode() + ")|(?:" + _UNUSUAL.decode() + ")"


def literal_scan(path: Path, scan: SheetScan, measure: bool = False) -> SheetScan:
    """Inflate the sheet XML and render every cell holding one of :data:`_LITERALS` (byte
    searches, GIL-free inflation: it runs beside a Rust reader at almost no cost). Cells it
    cannot find this way (integers past 2**53, date serials past 9999) leave a trace in the
    cells read, and the extractor then runs :func:`full_scan`. ``measure``: also measure the
    real extent and cell count (see :attr:`SheetScan.dense_ok`)."""
    if measure:
        scan.cell_count, scan.last_row, scan.width = 0, 0, 0
    for part in _row_parts(path, scan):
        if measure:
            _measure(part, scan)
        _literal_cells(part, scan)
    scan.measured = scan.measured or measure
    scan.literal = True
    return scan


def extent_and_literal_scan(path: Path, scan: SheetScan, entity: str = "workbook",
                            limit: Optional[int] = None) -> SheetScan:
    """:func:`measure_extent` and :func:`literal_scan` in one pass over the XML: one
    inflation and one RE2 search instead of two and eight searches. For the prefetch beside
    fastexcel's early read (see dense_read), which needs the extent only when that read ends."""
    limit = max_sheet_bytes() if limit is None else limit
    scan.cell_count, scan.last_row, scan.width = 0, 0, 0
    unusual = False
    for part in _row_parts(path, scan, (entity, limit)):
        unusual = _literal_cells(part, scan, unusual=True) or unusual
        if not scan.width and b"<c" in part:
            scan.width = 26
        _measure_rows(part, scan)
    scan.literal = True
    if unusual or not scan.dense_ok:
        _measure_exactly(path, scan, entity, limit)
    scan.measured = True
    return scan


def _literal_cells(part: bytes, scan: SheetScan, unusual: bool = False) -> bool:
    """Render the cells of ``part`` (whole rows) holding one of :data:`_LITERALS`. With
    ``unusual``, also say whether a row or cell in it is written an unusual way
    (:data:`_UNUSUAL`). Arrow's RE2 when usable (the slices holding either), else plain
    byte searches; the tests compare both."""
    arrow = _re2()
    if arrow is not None:
        try:
            return _literal_cells_re2(part, scan, unusual, arrow)
        except Exception:  # a pyarrow without this kernel for binary data: the plain path
            pass
    found = []
    for literal in _LITERALS:
        start = part.find(literal)
        while start >= 0:
            found.append(start)
            start = part.find(literal, start + 1)
    for start in sorted(found):  # in the order of the XML, as the RE2 path (a repeated reference: the last wins)
        _literal_cell(part, start, scan)
    return unusual and _UNUSUAL_RE.search(part) is not None


def _literal_cells_re2(part: bytes, scan: SheetScan, unusual: bool, arrow: Any) -> bool:
    pa, pc = arrow
    offsets = [0]
    at = _SLICE
    while at < len(part):  # cut after a row's end: no literal or cell start spans a cut
        end = part.find(b"</row>", at)
        if end < 0:
            break
        offsets.append(end + 6)
        at = end + 6 + _SLICE
    if offsets[-1] != len(part):
        offsets.append(len(part))
    import numpy as np  # (with pyarrow, numpy is there)

    slices = pa.Array.from_buffers(pa.binary(), len(offsets) - 1,
                                   [None, pa.py_buffer(np.array(offsets, dtype=np.int32)), pa.py_buffer(part)])
    hits = pc.match_substring_regex(slices, _SLICE_PATTERN).to_numpy(zero_copy_only=False)
    found = False
    for index in np.flatnonzero(hits):
        begin, end = offsets[index], offsets[index + 1]
        found = found or unusual and _UNUSUAL_RE.search(part, begin, end) is not None
        for match in _LITERAL_RE.finditer(part, begin, end):
            _literal_cell(part, match.start(), scan)
    return found


def measure_extent(path: Path, scan: SheetScan, entity: str = "workbook", limit: Optional[int] = None) -> SheetScan:
    """Measure the sheet's real extent (:attr:`SheetScan.dense_ok`) before a dense reader
    allocates for it. A first pass finds the last row and whether any row or cell is not
    written the plain way (:data:`_UNUSUAL`: a reference past column Z, attributes in another
    order, other whitespace or quotes, no reference). Without one, the extent is at most 26
    columns wide and the cell count does not matter; with one (rare), a second pass counts the
    cells and rows and measures the width."""
    limit = max_sheet_bytes() if limit is None else limit
    scan.cell_count, scan.last_row, scan.width = 0, 0, 0
    unusual = False
    carry = b""  # the end of the previous batch: a match may span two
    inflated = 0
    pending: list[bytes] = []
    batched = 0
    chunks = member_chunks(path, scan.member, 1 << 20)
    for chunk in itertools.chain(chunks, [b""]):
        inflated += len(chunk)
        if inflated > limit:
            raise InputFileError(_too_large(entity, path, scan.sheet_name, inflated, limit))
        pending.append(chunk)
        batched += len(chunk)
        if batched < _CHUNK and chunk:
            continue
        # A batch of about 8 MB: one RE2 call and a few byte searches.
        data = carry + b"".join(pending)
        pending, batched = [], 0
        unusual = unusual or _has_unusual(data)
        if not scan.width and b"<c" in data:
            scan.width = 26
        _measure_rows(data, scan)
        carry = data[-_CARRY:]
    scan.xml_bytes = inflated
    if unusual or not scan.dense_ok:
        _measure_exactly(path, scan, entity, limit)
    scan.measured = True
    return scan


def _measure_exactly(path: Path, scan: SheetScan, entity: str, limit: int) -> None:
    """The second pass for a sheet with an unusual row or cell: count cells, rows and widths."""
    scan.cell_count, scan.last_row, scan.width = 0, 0, 0
    rows = 0
    for part in _row_parts(path, scan, (entity, limit)):
        _measure(part, scan)
        rows += sum(part.count(b"<row" + end) for end in (b" ", b">", b"\n", b"\t", b"\r"))
    scan.last_row = max(scan.last_row, rows)  # rows without a reference count by position


def _has_unusual(data: bytes) -> bool:
    """Whether ``data`` holds a match of :data:`_UNUSUAL`: Arrow's RE2 (linear time, without
    the GIL) when usable, else ``re``. Both are given the same pattern; the tests compare them."""
    arrow = _re2()
    if arrow is not None:
        pa, pc = arrow
        try:
            return bool(pc.match_substring_regex(pa.array([data], type=pa.binary()), _UNUSUAL_TEXT)[0].as_py())
        except Exception:  # a pyarrow without this kernel for binary data: the plain path
            pass
    return _UNUSUAL_RE.search(data) is not None


def _re2() -> Any:
    """(``pyarrow``, ``pyarrow.compute``) if pyarrow 7+ is installed, else None. Only these two
    modules are imported (the pre-scan runs before anything else has loaded pyarrow; the full
    guard in ``_arrow`` also loads its CSV writer and self-checks, 0.2 s more)."""
    global _RE2
    if _RE2 is False:
        _RE2 = None
        try:
            import pyarrow
            import pyarrow.compute

            if int(pyarrow.__version__.split(".")[0]) >= 7:
                _RE2 = (pyarrow, pyarrow.compute)
        except (ImportError, ValueError):
            pass
    return _RE2


_RE2: Any = False


def _row_parts(path: Path, scan: SheetScan, limit: Optional[tuple[str, int]] = None) -> Iterator[bytes]:
    """The sheet XML in parts of about :data:`_CHUNK` bytes that end after a ``</row>`` (the
    last one: whatever is left). ``limit``: (entity, bytes) - raise :class:`InputFileError`
    once more than that many bytes have been inflated."""
    tail = b""
    inflated = 0
    for chunk in member_chunks(path, scan.member, _CHUNK):
        inflated += len(chunk)
        if limit is not None and inflated > limit[1]:
            raise InputFileError(_too_large(limit[0], path, scan.sheet_name, inflated, limit[1]))
        buffer = tail + chunk if tail else chunk
        end = buffer.rfind(b"</row>")
        if end < 0:  # no complete row yet
            tail = buffer
            continue
        end += len(b"</row>")
        tail = buffer[end:]
        yield buffer[:end]
    scan.xml_bytes = inflated
    if tail:
        yield tail


def _literal_cell(part: bytes, at: int, scan: SheetScan) -> None:
    begin = part.rfind(b"<c ", 0, at + 1)
    if begin < 0:
        return
    close = part.find(b">", begin)
    end = part.find(b"</c>", close)
    if close < 0 or end < 0 or part.rfind(b"/>", begin, close + 1) == close - 1:
        return
    attributes, content = part[begin + 2:close], part[close + 1:end]
    styles = _STYLE.search(attributes.decode("utf-8", "replace"))
    kind = _TYPE.search(attributes.decode("utf-8", "replace"))
    if kind and kind.group(1) in ("s", "str", "inlineStr"):
        return
    _correct(scan, attributes, content, date=bool(styles and styles.group(1) in scan.date_styles))


def full_scan(path: Path, scan: SheetScan, entity: str, limit: Optional[int] = None) -> SheetScan:
    """Run the full streaming scan (corrections, real extent) if it has not run yet."""
    if scan.full:
        return scan
    limit = max_sheet_bytes() if limit is None else limit
    _scan_xml(path, scan, entity, limit)
    return scan


def _too_large(entity: str, path: Path, sheet: str, size: int, limit: int, part: str = "XML") -> str:
    return (f"{entity} file {Path(path).name}: sheet {sheet!r} holds more than {limit:,} bytes of {part} "
            f"({size:,}); raise {MAX_SHEET_XML_ENV} if this is expected")


def _sheets(archive: zipfile.ZipFile) -> tuple[list[str], list[str]]:
    """Sheet names in workbook order and their XML members."""
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    targets = {}
    for rel in rels:
        target = rel.get("Target", "")
        target = target.lstrip("/") if target.startswith("/") else "xl/" + target
        targets[rel.get("Id")] = os.path.normpath(target).replace(os.sep, "/")
    names, members = [], []
    for node in workbook.iterfind("m:sheets/m:sheet", _NS):
        names.append(node.get("name", ""))
        members.append(targets.get(node.get(_REL_ID), ""))
    return names, members


def read_date_styles(path: Path) -> set[str]:
    """:attr:`SheetScan.date_styles` of the workbook at ``path``."""
    with zipfile.ZipFile(path) as archive:
        return _date_styles(archive)


def _date_styles(archive: zipfile.ZipFile) -> set[str]:
    """Style ids (``s=`` values) whose number format is a date, as openpyxl judges it."""
    from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format

    try:
        styles = ElementTree.fromstring(archive.read("xl/styles.xml"))
    except KeyError:
        return set()
    custom = {node.get("numFmtId"): node.get("formatCode", "") for node in styles.iterfind("m:numFmts/m:numFmt", _NS)}
    found = set()
    for index, xf in enumerate(styles.iterfind("m:cellXfs/m:xf", _NS)):
        number = xf.get("numFmtId", "0")
        code = custom.get(number)
        if code is None and number.isdigit():
            code = BUILTIN_FORMATS.get(int(number), "")
        if code and is_date_format(code):
            found.add(str(index))
    return found


def _scan_xml(path: Path, scan: SheetScan, entity: str, limit: int) -> None:
    scan.corrections, scan.cell_count, scan.last_row, scan.width, scan.xml_bytes = {}, 0, 0, 0, 0
    styles = "|".join(sorted(scan.date_styles)) or "(?!)"
    not_text = rb'(?![^>]*\bt="(?:s|str|inlineStr|e|b|d)")'
    numbers = re.compile(
        rb"<c\b" + not_text + rb'(?![^>]*\bs="(?:' + styles.encode() + rb')")([^>]*)>' + _FORMULA
        + rb"<v>([^<]*[.Ee-][^<]*|[0-9]{16,})</v>"
    )
    dates = re.compile(
        rb"<c\b" + not_text + rb'(?=[^>]*\bs="(?:' + styles.encode() + rb')")([^>]*)>' + _FORMULA
        + rb"<v>(-[^<]*|0(?:\.[^<]*)?|[0-9]{7,}(?:\.[^<]*)?|[^<]*[Ee][^<]*)</v>"
    )
    for part in _row_parts(path, scan, (entity, limit)):
        _scan_part(part, scan, numbers, dates)
    scan.full = scan.measured = True


def _measure_rows(part: bytes, scan: SheetScan) -> None:
    """The last row so far: rows are in order, so the last row of a part is its largest (a row
    out of order only makes a dense reader's extent smaller)."""
    rows = _LAST_ROW.findall(part[-65536:]) or _LAST_ROW.findall(part)
    if rows:
        scan.last_row = max(scan.last_row, int(rows[-1]))


def _measure(part: bytes, scan: SheetScan) -> None:
    """Real cell count and extent: columns past Z are found by their two- or three-letter
    references; cells without a reference a reader places by position, so then the width is
    taken as the widest a sheet can be."""
    cells = part.count(b"<c ") + part.count(b"<c>") + part.count(b"<c\n") + part.count(b"<c\t") + part.count(b"<c\r")
    scan.cell_count += cells
    _measure_rows(part, scan)
    wide = set(_WIDE.findall(part))
    width = max((column_index(letters.decode()) + 1 for letters in wide), default=26 if b"<c" in part else 0)
    if cells > len(_CELL_REF.findall(part)):  # a cell without a reference
        width = _MAX_COLUMNS
    scan.width = max(scan.width, width)


def _scan_part(part: bytes, scan: SheetScan, numbers: "re.Pattern[bytes]", dates: "re.Pattern[bytes]") -> None:
    _measure(part, scan)
    if b't="e"' in part or b't="b"' in part or b't="d"' in part:  # rare: a fast byte search first
        for match in _TYPED.finditer(part):
            _correct(scan, match.group(1), match.group(2) or b"", date=False)
    for match in numbers.finditer(part):
        _correct(scan, match.group(1), b"<v>" + match.group(2) + b"</v>", date=False)
    for match in dates.finditer(part):
        _correct(scan, match.group(1), b"<v>" + match.group(2) + b"</v>", date=True)


def _correct(scan: SheetScan, attributes: bytes, content: bytes, date: bool) -> None:
    attrs = attributes.decode("utf-8", "replace")
    ref = _REF.search(attrs)
    if ref is None:  # a cell without a reference: readers place it by position; leave it to them
        return
    kind = _TYPE.search(attrs)
    value = _VALUE.search(content)
    text = None if value is None else _xml_text(value.group(1))
    rendered = render_raw(kind.group(1) if kind else "n", text, date)
    scan.corrections[(int(ref.group(2)), column_index(ref.group(1)))] = rendered


def _xml_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&apos;", "'") \
        .replace("&amp;", "&") if "&" in text else text


def render_raw(kind: str, value: Optional[str], date_styled: bool) -> Optional[str]:
    """The one rendering of a cell from its stored type and text (``<v>``).

    Errors and booleans: :data:`NOT_A_VALUE` + ``#VALUE!`` / ``true``. Numbers: as
    :func:`healthtech_etl.extract.cell_text` renders them, except integers at or past 2**53
    (not exact in Excel) which are :data:`NOT_A_VALUE` + the stored text. Date-styled numbers:
    the date, as openpyxl converts it (a negative serial counts back from 1899-12-30, as
    LibreOffice and openpyxl write dates before 1900), else :data:`NOT_A_VALUE` + the stored
    text: a serial from 0 to under 1 (a bare time) or past 9999-12-31."""
    if value is None or value == "":
        return None
    if kind == "e":
        return NOT_A_VALUE + value
    if kind == "b":
        return NOT_A_VALUE + ("true" if value.strip() in ("1", "true") else "false")
    if kind == "d":  # an ISO 8601 date cell: its text is the date
        return value
    try:
        number = float(value)
    except ValueError:
        return NOT_A_VALUE + value
    if number != number or number in (float("inf"), float("-inf")):
        return NOT_A_VALUE + value
    if date_styled:
        # Under 1 but not negative: a bare time, no date. Past 9999-12-31 or before year 1: none.
        if not (1 <= number < _LAST_DATE_SERIAL or _FIRST_DATE_SERIAL <= number < 0):
            return NOT_A_VALUE + value
        from .extract import cell_text

        return cell_text(_excel_date(number))
    if number.is_integer() or re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        exact = int(value) if re.fullmatch(r"[+-]?[0-9]+", value.strip()) else int(number)
        if abs(exact) >= EXACT_INTEGER_LIMIT:
            return NOT_A_VALUE + value.strip()
        return str(exact)
    return repr(number)


def _excel_date(serial: float) -> datetime:
    """openpyxl's conversion (1900 system, its leap-year-bug shift, milliseconds rounded).
    A negative serial (a date before 1900, which Excel cannot show but LibreOffice and openpyxl
    write) counts back from 1899-12-30, as they do."""
    day, fraction = divmod(serial, 1)
    diff = timedelta(milliseconds=round(fraction * 86_400_000))
    if 0 < serial < 60:
        day += 1
    return datetime(1899, 12, 30) + timedelta(days=day) + diff


class SheetPrefetch:
    """A sheet's pre-scans started early, beside the rest of the program: :func:`scan_sheet`,
    the real extent (:func:`measure_extent`, or the literal scan's measure for a small sheet),
    then the literal scan. The CLI starts it for the appointments sheet before it imports pandas
    and reads the doctors; :func:`extract.read_sheet` takes the scan (:meth:`result`) before its
    reader runs and the literal scan's corrections (:meth:`literal_into`) after it.

    On Linux, when this process has no other thread yet, the work runs in a forked child: it takes the second core without ever
    waiting for this process's GIL (in a thread, each of its thousands of small inflate steps
    waited for the GIL while the main thread imported libraries or converted cells). Elsewhere
    it runs in a daemon thread. Either way errors are raised where the results are taken."""

    def __init__(self, path: Path, sheet: Optional[str], entity: str, fork: Optional[bool] = None,
                 read_columns: Optional[Sequence[str]] = None, judge_day_first: Optional[bool] = None) -> None:
        self.path, self.sheet, self.entity = Path(path), sheet, entity
        self._scan: Optional[SheetScan] = None
        self._literal_follows = False
        if fork is None:
            # Forking is safe only while no other thread could hold a lock the child needs
            # (the import lock, a logging handler's): the CLI starts this before any thread.
            fork = sys.platform.startswith("linux") and threading.active_count() == 1
        # read_columns: fastexcel's read starts now too, in a child of its own (see dense_read),
        # which then judges the distinct values too if judge_day_first is given.
        self._read: Optional[SpeculativeRead] = None
        if fork and read_columns is not None:
            from . import dense_read

            self._read = dense_read.SpeculativeRead(path, sheet, entity, read_columns, judge_day_first)
        self._source = _ForkedWork(self._work) if fork else _ThreadWork(self._work)

    def _work(self, send: Callable[[str, Any], None]) -> None:
        from . import overlong

        # The date styles (openpyxl's judgement: its import takes 0.1 s) come after the extent.
        scan = scan_sheet(self.path, self.sheet, self.entity, date_styles=False)
        if overlong.ENABLED and overlong.sheet_is_searched(scan.declared_bytes, scan.compressed_bytes):
            # Text in this sheet may be cut first (see overlong): the extractor scans the copy.
            scan.date_styles = read_date_styles(self.path)
            send("scan", (scan, False))
        elif scan.declared_bytes > MEASURE_FIRST_BYTES and self._read is not None:
            # Beside an early read the extent is needed only when that read ends: one pass.
            scan.date_styles = read_date_styles(self.path)
            extent_and_literal_scan(self.path, scan, self.entity)
            send("scan", (scan, False))
        elif scan.declared_bytes > MEASURE_FIRST_BYTES:
            measure_extent(self.path, scan, self.entity)
            send("scan", (replace(scan, corrections={}), True))  # (a thread must not share what it changes)
            scan.date_styles = read_date_styles(self.path)
            literal_scan(self.path, scan)
            send("literal", (scan.corrections, scan.date_styles))
        else:
            scan.date_styles = read_date_styles(self.path)
            literal_scan(self.path, scan, measure=True)
            send("scan", (scan, False))

    def is_for(self, path: Path, sheet: Optional[str]) -> bool:
        return Path(path) == self.path and sheet == self.sheet

    def result(self) -> SheetScan:
        """The scan, its extent measured; raises what the scan raised."""
        if self._scan is None:
            self._scan, self._literal_follows = self._source.take("scan")
            if not self._literal_follows:
                self._source.stop()  # that was its last message
        return self._scan

    def dense_read(self, path: Path, sheet_name: str) -> Optional["ArrowRead"]:
        """fastexcel's read of ``sheet_name`` started early, if one was, succeeded and read
        ``path`` (waits for it); else None. Call it only for a sheet found safe for a dense
        reader (:attr:`SheetScan.dense_ok`)."""
        read, self._read = self._read, None
        return None if read is None else read.take(path, sheet_name)

    def drop_read(self) -> None:
        """Stop the early read, if any (a sheet read another way)."""
        read, self._read = self._read, None
        if read is not None:
            read.drop()

    def literal_runs(self) -> bool:
        """Whether the literal scan runs here (after :meth:`result`)."""
        return self._literal_follows

    def literal_into(self, scan: SheetScan) -> None:
        """Wait for the literal scan, if one runs here, and put its corrections into ``scan``."""
        if self._literal_follows:
            corrections, scan.date_styles = self._source.take("literal", last=True)
            scan.corrections.update(corrections)
            scan.literal = True
            self._literal_follows = False


class _ThreadWork:
    """``work(send)`` in a daemon thread; :meth:`take` waits for the message of a kind."""

    def __init__(self, work: Callable[[Callable[[str, Any], None]], None]) -> None:
        self._messages: dict[str, Any] = {}
        self._arrived = threading.Condition()

        def send(kind: str, value: Any) -> None:
            with self._arrived:
                self._messages[kind] = value
                self._arrived.notify_all()

        def run() -> None:
            try:
                work(send)
            except BaseException as exc:  # raised by take(), in the reading thread
                send("error", exc)

        threading.Thread(target=run, name="sheet-prefetch", daemon=True).start()

    def stop(self) -> None:
        """(The daemon thread ends by itself.)"""

    def take(self, kind: str, last: bool = False) -> Any:
        with self._arrived:
            self._arrived.wait_for(lambda: kind in self._messages or "error" in self._messages)
            if kind in self._messages:
                return self._messages.pop(kind)
            raise self._messages["error"]


class _ForkedWork:
    """``work(send)`` in a forked child; messages come back pickled through a pipe, in order.
    The child is reaped after its last message, or killed when this process exits first (or
    is killed: the child gets SIGKILL when its parent dies, on Linux)."""

    _open_pipes: "set[int]" = set()  # read ends of the children still running

    def __init__(self, work: Callable[[Callable[[str, Any], None]], None]) -> None:
        read_end, write_end = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            code = 0
            try:
                _die_with_parent()
                os.close(read_end)
                for other in _ForkedWork._open_pipes:  # another worker's: its end must close with the parent
                    os.close(other)
                with os.fdopen(write_end, "wb") as out:
                    def send(kind: str, value: Any) -> None:
                        pickle.dump((kind, value), out, protocol=pickle.HIGHEST_PROTOCOL)
                        out.flush()

                    try:
                        work(send)
                    except BaseException as exc:
                        send("error", _picklable(exc))
                    send("end", None)
            except BaseException:  # the parent is gone (a broken pipe): nothing to tell
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        self._pipe = os.fdopen(read_end, "rb")
        _ForkedWork._open_pipes.add(read_end)
        self._error: Optional[BaseException] = None
        atexit.register(self.stop)

    def take(self, kind: str, last: bool = False) -> Any:
        """The next message, which must be of ``kind``; ``last``: the child has no more to say
        (it is reaped)."""
        if self._error is not None:
            raise self._error
        try:
            got, value = pickle.load(self._pipe)
        except (EOFError, pickle.UnpicklingError, OSError) as exc:
            got, value = "error", InputFileError(f"the pre-scan stopped unexpectedly ({type(exc).__name__})")
        if got == "error":
            self._error = value
            self.stop()
            raise value
        if got != kind:  # messages come in the order the work sends them
            raise RuntimeError(f"pre-scan sent {got!r}, expected {kind!r}")
        if last:
            self.stop()
        return value

    def stop(self) -> None:
        """Reap the child (killing it if it still runs); idempotent."""
        if self.pid <= 0:
            return
        pid, self.pid = self.pid, 0
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        _ForkedWork._open_pipes.discard(self._pipe.fileno())
        self._pipe.close()
        atexit.unregister(self.stop)


def _die_with_parent() -> None:
    """Linux: this (forked) process is killed when its parent dies, whatever kills the parent."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else an :class:`InputFileError` saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return InputFileError(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")


def start_prefetch(path: Path, sheet: Optional[str], entity: str, reader: str,
                   mandatory_columns: Optional[Sequence[str]] = None, fork: Optional[bool] = None,
                   judge_day_first: Optional[bool] = None) -> Optional[SheetPrefetch]:
    """A :class:`SheetPrefetch` of ``path`` when a dense reader will read it (``reader``
    fastexcel or calamine, or ``auto`` with one installed), else None: the Glue path reads
    with openpyxl and keeps its one process. When that reader is fastexcel and
    ``mandatory_columns`` are given, its read starts too (:class:`.dense_read.SpeculativeRead`).
    ``fork``, ``judge_day_first``: see :class:`SheetPrefetch`. Looks the readers up without
    importing them."""
    from importlib.util import find_spec

    if reader == "openpyxl" or not Path(path).is_file():
        return None
    fastexcel = find_spec("fastexcel") is not None and find_spec("pyarrow") is not None
    if reader == "auto" and not fastexcel and find_spec("python_calamine") is None:
        return None
    reads = mandatory_columns is not None and fastexcel and reader in ("auto", "fastexcel")
    return SheetPrefetch(path, sheet, entity, fork=fork, read_columns=mandatory_columns if reads else None,
                         judge_day_first=judge_day_first)
