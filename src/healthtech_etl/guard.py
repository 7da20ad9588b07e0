"""Check an .xlsx package before python-calamine reads it: calamine trusts the zip and builds one
dense grid up to the sheet's last cell (a 2 KB file can ask for gigabytes). The parts it reads are
inflated here 8 MiB at a time, their sizes *counted* (never a zip header's word), the sheet's rows
and columns scanned; past :class:`Limits`: :class:`InputFileError` (exit 3), one line."""

import re
import zipfile
import zlib
from array import array
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial, reduce
from html import unescape
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .errors import ConfigError, InputFileError

MAX_ROWS, MAX_COLUMNS = 1_048_576, 16_384  # Excel's own limits
PIECE = 8 << 20
# A row tag's number; a cell's column letters (b"" for a cell written without a reference);
# {p}: the namespace prefix the sheet's elements are written with (usually none).
_ROW = rb'<{p}row\b[^>]*?\sr\s*=\s*["\'](\d+)'
_CELL = rb'<{p}c\b(?:[^>]*?\sr\s*=\s*["\']\$?([A-Za-z]+))?'
_PREFIX = re.compile(rb"<(\w+:)?sheetData\b")
_SHEET = re.compile(rb"<(?:\w+:)?sheet\b[^>]*>")
_RELATION = re.compile(rb"<(?:\w+:)?Relationship\b[^>]*>")


@dataclass(frozen=True)
class Limits:
    """What a workbook may hold; the defaults suit any export Excel can write."""

    sheet_bytes: int = 2 << 30  # the sheet's XML, inflated
    strings_bytes: int = 512 << 20  # xl/sharedStrings.xml, inflated
    strings: int = 8_000_000  # shared strings (calamine holds every one)
    part_bytes: int = 64 << 20  # xl/workbook.xml, its relationships, xl/styles.xml
    grid_cells: int = 1 << 22  # a sheet's grid may span this many cells, or one per 8 bytes of XML

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Limits":
        """The defaults, the sheet's cap from ``ETL_MAX_SHEET_XML_BYTES`` if set."""
        value = env.get("ETL_MAX_SHEET_XML_BYTES", "").strip()
        if value and (not value.isdigit() or int(value) < 1):
            raise ConfigError(f"ETL_MAX_SHEET_XML_BYTES must be a whole number of bytes (got {value!r})")
        return cls(sheet_bytes=int(value)) if value else cls()


@dataclass
class SheetScan:
    """What the scan of one sheet found."""

    name: str
    member: str
    sheet_names: list[str] = field(default_factory=list)
    xml_bytes: int = 0
    rows: "array[int]" = field(default_factory=lambda: array("q"))  # row numbers, in the order written
    letters: set[bytes] = field(default_factory=set)  # column letters of the cells' references
    unreferenced: int = 0  # cells without a reference (calamine counts them along the row)
    patterns: Optional[tuple["re.Pattern[bytes]", "re.Pattern[bytes]"]] = None
    prefix: bytes = b""  # the elements' namespace prefix, as a regex
    unusual: Optional["re.Pattern[bytes]"] = None  # cells other than <c r="X1" with letters X seen
    known: int = 0  # how many letters ``unusual`` knows
    in_order: bool = True  # row numbers ascending as written


def check_workbook(path: Path, sheet: Optional[str], entity: str, limits: Limits = Limits()) -> SheetScan:
    """Check what calamine reads of ``path`` for ``sheet`` (None: the first); the sheet's scan."""
    where = f"{entity} file {Path(path).name}"
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputFileError(f"{where} is not an .xlsx workbook: {exc}") from exc
    with archive:  # members named in any case, as calamine finds them
        part = partial(_pieces, archive.filename or "", {i.filename.lower(): i for i in archive.infolist()}, where)
        strings = 0
        for piece in part("xl/sharedStrings.xml", limits.strings_bytes):
            strings += piece.count(b"<si")
            if strings > limits.strings:
                raise InputFileError(f"{where}: more than {limits.strings:,} shared strings")
        deque(part("xl/styles.xml", limits.part_bytes), maxlen=0)  # read through: its size counts
        scan = _find_sheet(part, where, sheet, limits)
        try:
            for piece in part(scan.member, limits.sheet_bytes):
                _scan_piece(piece, scan)
        except OverflowError as exc:  # past int64
            raise InputFileError(f"{where}, sheet {scan.name!r}: a row number is outside Excel's 1 to "
                                 f"{MAX_ROWS:,}") from exc
    where += f", sheet {scan.name!r}"  # now the grid calamine will build for the sheet
    if scan.rows and not 1 <= min(scan.rows) <= max(scan.rows) <= MAX_ROWS:
        bad = next(number for number in scan.rows if not 1 <= number <= MAX_ROWS)
        raise InputFileError(f"{where}: row number {bad:,} is outside Excel's 1 to {MAX_ROWS:,}")
    # b"A" -> 1, b"xfd" -> 16384 (calamine reads lower case as upper case)
    columns = [reduce(lambda number, letter: number * 26 + letter - 64, letters.upper(), 0)
               for letters in scan.letters if letters] or [1]
    if max(columns) > MAX_COLUMNS:
        raise InputFileError(f"{where}: a cell reference lies past Excel's last column (XFD)")
    numbers = np.asarray(scan.rows, dtype="int64")
    scan.in_order = bool((np.diff(numbers) > 0).all())
    if not scan.in_order:
        distinct, counts = np.unique(numbers, return_counts=True)
        if (counts > 1).any():
            raise InputFileError(f"{where}: row {int(distinct[counts > 1][0]):,} is written twice")
    width = min(max(columns) + scan.unreferenced, MAX_COLUMNS) - min(columns) + 1
    last_row = max(scan.rows, default=0)
    allowed = max(limits.grid_cells, scan.xml_bytes // 8)
    if last_row * width > allowed:
        raise InputFileError(
            f"{where}: its cells span {last_row:,} rows x {width:,} columns ({last_row * width:,} cells) for "
            f"{scan.xml_bytes:,} bytes of data (limit {allowed:,}): a stray cell far from the data? "
            "Delete it and export again")
    return scan


def _find_sheet(part: Callable[..., Iterator[bytes]], where: str, sheet: Optional[str], limits: Limits) -> SheetScan:
    """The sheet's name and zip member, found as calamine finds them."""
    workbook = b"".join(part("xl/workbook.xml", limits.part_bytes))
    rels = b"".join(part("xl/_rels/workbook.xml.rels", limits.part_bytes))
    targets = {_attribute(tag, b"Id"): _attribute(tag, b"Target") for tag in _RELATION.findall(rels)}
    sheets = [(_attribute(tag, b"name"), _attribute(tag, b"id")) for tag in _SHEET.findall(workbook)]
    names = [title for title, _ in sheets]
    wanted = sheet if sheet is not None else next(iter(names), None)
    for title, relation in sheets:
        if title == wanted:
            target = targets.get(relation, "").lstrip("/")
            return SheetScan(title, target if target.startswith("xl/") else f"xl/{target}", names)
    listed = ", ".join(repr(title) for title in names) or "none"
    raise InputFileError(f"{where}: sheet {wanted!r} not found (sheets: {listed})")


def _attribute(tag: bytes, key: bytes) -> str:
    found = re.search(rb"(?:\s|:)" + key + rb'\s*=\s*(["\'])(.*?)\1', tag)
    return unescape(found.group(2).decode("utf-8", "replace")) if found else ""


def _scan_piece(piece: bytes, scan: SheetScan) -> None:
    if scan.patterns is None:
        found = _PREFIX.search(piece)
        scan.prefix = re.escape(found.group(1) or b"") if found else rb"(?:\w+:)?"
        scan.patterns = (re.compile(_ROW.replace(b"{p}", scan.prefix)), re.compile(_CELL.replace(b"{p}", scan.prefix)))
    scan.xml_bytes += len(piece)
    scan.rows.extend(map(int, scan.patterns[0].findall(piece)))
    cell, starts = scan.patterns[1], _unusual_cells(piece, scan)
    letters = cell.findall(piece) if starts is None else [cell.match(piece, start).group(1) or b"" for start in starts]
    scan.unreferenced += letters.count(b"")
    scan.letters.update(letters)
    known = sorted(letter for letter in scan.letters if letter.isalpha())
    if len(known) > 64:  # a sheet this wide: every cell matched
        scan.unusual = None
    elif known and (scan.unusual is None or scan.known != len(known)):
        scan.unusual = re.compile(b"<" + scan.prefix + rb'c\b(?! r="(?:' + b"|".join(known) + rb")[0-9])")
        scan.known = len(known)


def _unusual_cells(piece: bytes, scan: SheetScan) -> Optional[list[int]]:
    """Where the cells not written ``<c r="X1"`` with letters X seen before are (most cells are);
    None if every cell is to be matched (the first piece, or too many such cells)."""
    if scan.unusual is None:
        return None
    starts: list[int] = []
    for found in scan.unusual.finditer(piece):
        if len(starts) == 1024:
            return None
        starts.append(found.start())
    return starts


def _pieces(path: str, members: dict[str, zipfile.ZipInfo], where: str, member: str, limit: int) -> Iterator[bytes]:
    """``member`` inflated a piece at a time, each cut after a tag's end; its size counted."""
    info = members.get(member.lower())
    if info is None:
        return
    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InputFileError(f"{where}: {info.filename} is encrypted or compressed as Excel never does")
    total, carry = 0, b""
    try:
        for raw in filter(None, _inflated(path, info)):
            total += len(raw)
            if total > limit:
                raise InputFileError(f"{where}: {info.filename} inflates past {limit:,} bytes (a zip bomb? "
                                     "the sheet's cap: ETL_MAX_SHEET_XML_BYTES)")
            piece = carry + raw
            cut = piece.rfind(b"<")
            if cut < 0 or len(piece) - cut > PIECE:  # calamine would buffer it whole
                raise InputFileError(f"{where}: {info.filename} runs over {PIECE:,} bytes without a tag "
                                     "(a text longer than any cell Excel can hold, or padding)")
            closed = piece.find(b">", cut) >= 0
            carry = b"" if closed else piece[cut:]
            yield piece if closed else piece[:cut]
        if carry:
            yield carry
    except zlib.error as exc:
        raise InputFileError(f"{where}: {info.filename} is damaged: {exc}") from exc


def _inflated(path: str, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's bytes from its raw stream, at most :data:`PIECE` at a time (some empty)."""
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        header = raw.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise zlib.error("bad local file header")
        raw.seek(int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little"), 1)
        inflater = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
        left = info.compress_size
        while left > 0:
            data = raw.read(min(left, 1 << 20))
            if not data:
                raise zlib.error("truncated member")
            left -= len(data)
            while data:
                yield inflater.decompress(data, PIECE) if inflater else data
                data = inflater.unconsumed_tail if inflater else b""
        yield inflater.flush() if inflater else b""
