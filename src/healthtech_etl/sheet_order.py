"""A copy of a workbook whose sheet rows are written out of order, with them in order.

calamine sizes a sheet from its first and last cell as written and silently drops a cell
outside that span; Excel always writes rows in order, but other writers need not. The
guard (:mod:`.guard`) sees the order; this puts the rows of such a sheet in order in a copy,
so every cell is read at its reference. Only such sheets pay for it.
"""

import re
import shutil
import zipfile
from pathlib import Path

from .guard import SheetScan

_ROW_START = re.compile(rb"<row\b")
_ROW_NUMBER = re.compile(rb'^<row\b[^>]*?\sr\s*=\s*["\'](\d+)')


def sorted_copy(path: Path, scan: SheetScan, target: Path) -> Path:
    """Write ``path`` to ``target`` with ``scan``'s sheet rows sorted by row number (the guard
    has checked the sizes and that no number repeats)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            if info.filename.lower() != scan.member.lower():
                with source.open(info) as member, copy.open(info.filename, "w", force_zip64=True) as out:
                    shutil.copyfileobj(member, out, 1 << 20)
                continue
            copy.writestr(info.filename, sort_rows(source.read(info)), zipfile.ZIP_DEFLATED)
    return target


def sort_rows(xml: bytes) -> bytes:
    """The sheet XML with its ``<row>`` elements in row-number order (rows without a number
    keep their place before the numbered ones)."""
    start = xml.find(b">", xml.find(b"<sheetData")) + 1
    end = xml.rfind(b"</sheetData>")
    starts = [match.start() for match in _ROW_START.finditer(xml, start, end)]
    if not starts:
        return xml
    pieces = [xml[a:b] for a, b in zip(starts, starts[1:] + [end])]

    def number(piece: bytes) -> int:
        found = _ROW_NUMBER.match(piece)
        return int(found.group(1)) if found else 0

    return xml[: starts[0]] + b"".join(sorted(pieces, key=number)) + xml[end:]
