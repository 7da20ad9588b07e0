"""A copy of a workbook whose sheet rows are written out of order, with them in order: calamine
sizes a sheet from its first and last cell as written and silently drops a cell outside that span.
Excel writes rows in order, other writers need not; only such sheets (see :mod:`.guard`) pay for it.
"""

import re
import shutil
import zipfile
from pathlib import Path

from .guard import SheetScan

_ROW_START = re.compile(rb"<row\b")
_ROW_NUMBER = re.compile(rb'^<row\b[^>]*?\sr\s*=\s*["\'](\d+)')


def sorted_copy(path: Path, scan: SheetScan, target: Path) -> Path:
    """``path`` copied to ``target``, ``scan``'s sheet rows sorted (the guard has checked sizes and numbers)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            if info.filename.lower() != scan.member.lower():
                with source.open(info) as member, copy.open(info.filename, "w", force_zip64=True) as out:
                    shutil.copyfileobj(member, out, 1 << 20)
                continue
            copy.writestr(info.filename, sort_rows(source.read(info)), zipfile.ZIP_DEFLATED)
    return target


def sort_rows(xml: bytes) -> bytes:
    """The sheet XML with its ``<row>`` elements in row-number order (unnumbered rows first)."""
    start = xml.find(b">", xml.find(b"<sheetData")) + 1
    end = xml.rfind(b"</sheetData>")
    starts = [match.start() for match in _ROW_START.finditer(xml, start, end)]
    if not starts:
        return xml
    pieces = [xml[a:b] for a, b in zip(starts, starts[1:] + [end])]
    pieces.sort(key=lambda piece: int(found.group(1)) if (found := _ROW_NUMBER.match(piece)) else 0)
    return xml[: starts[0]] + b"".join(pieces) + xml[end:]
