"""Read one sheet of an .xlsx workbook with python-calamine, the one reader on every path: the
package checked first (:mod:`.guard`), calamine's typed cells handed over unchanged (an empty or
error cell: "", as calamine gives it), judged later by :mod:`.cells` and :mod:`.clean`. The header is the first row
among the first 20 holding every mandatory column; row numbers are the sheet's own."""

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from . import guard, sheet_order
from .errors import ConfigError, InputFileError
from .redact import safe_text
from .schema import SOURCE_ROW

logger = logging.getLogger(__name__)

CALAMINE_VERSION = "0.4"  # the cell semantics below are this release's (README "Data rules")
HEADER_SEARCH_ROWS = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class SheetData:
    """What was read from one sheet: the mandatory columns' cells below the header and
    ``source_row``; ``unreadable``: rows calamine could not hand over (see :func:`_rows`)."""

    frame: pd.DataFrame
    sheet: str = ""
    extra_columns: list[str] = field(default_factory=list)
    blank_rows: int = 0
    skipped_header_rows: int = 0
    unreadable: list[int] = field(default_factory=list)
    reader: str = f"python-calamine {CALAMINE_VERSION}"


def calamine() -> Any:
    """The python_calamine module, checked to be the release whose semantics we document."""
    try:
        from importlib.metadata import version  # here: the tests patch it

        import python_calamine
    except ImportError as exc:
        raise ConfigError("python-calamine is not installed: pip install 'python-calamine==0.4.0' "
                          "(or the package with its runtime extra: pip install 'healthtech-etl[runtime]')") from exc
    found = version("python-calamine")
    if found.split(".")[:2] != CALAMINE_VERSION.split("."):
        raise ConfigError(f"python-calamine {found} is installed; this release reads with {CALAMINE_VERSION}.x "
                          "(pip install 'python-calamine==0.4.0')")
    return python_calamine


def normalize_header(name: Any) -> str:
    """``' Booking  ID '`` -> ``'booking_id'``: case- and whitespace-insensitive matching."""
    return re.sub(r"\s+", "_", str(name if name is not None else "").strip()).lower()


def read_sheet(path: Path, mandatory_columns: Sequence[str], sheet: Optional[str] = None,
               entity: str = "workbook", limits: Optional[guard.Limits] = None) -> SheetData:
    """Read ``sheet`` (None: the first) of ``path`` keeping ``mandatory_columns``; :class:`InputFileError`
    for a missing, unreadable, oversized or empty file or sheet, or no header in the first 20 rows."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{entity} file not found: {path}")
    reader = calamine()
    scan = guard.check_workbook(path, sheet, entity, limits or guard.Limits.from_env(os.environ))
    with tempfile.TemporaryDirectory(prefix="healthtech-read-") as folder:
        if not scan.in_order:
            logger.warning("%s file %s: rows are written out of order in sheet %r; read in row order",
                           entity, path.name, scan.name)
        try:
            source = path if scan.in_order else sheet_order.sorted_copy(path, scan, Path(folder) / path.name)
            with reader.CalamineWorkbook.from_path(str(source)) as workbook:
                rows = _rows(workbook.get_sheet_by_name(scan.name), mandatory_columns)
        except BaseException as exc:  # calamine's errors, and its panics (pyo3's PanicException)
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            first = (str(exc).strip().splitlines() or ["no details"])[0][:200]
            raise InputFileError(f"cannot read {entity} file {path.name}: {type(exc).__name__}: {first}") from exc
    return _select(rows, mandatory_columns, scan, entity, path.name)


@dataclass
class _Rows:
    """The first rows (up to the header), and below the header each mandatory column's cells."""

    first: list[list[Any]] = field(default_factory=list)
    header_index: int = -1
    positions: dict[str, int] = field(default_factory=dict)
    columns: list[list[Any]] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)


def _rows(sheet: Any, mandatory_columns: Sequence[str]) -> _Rows:
    """The sheet's rows from row 1; below the header only the mandatory cells, kept by column. A
    row calamine cannot hand over (a date cell past 9999-12-31, where Python's dates end) comes
    back empty, its number in ``unreadable`` (the cleaner rejects it as ``unreadable_row``)."""
    rows = _Rows()
    if sheet.start is None:  # no cell at all (calamine cannot iterate such a sheet)
        return rows
    iterator = sheet.iter_rows()
    for row in iterator:
        rows.first.append(row)
        positions: dict[str, int] = {}
        for position, key in enumerate(map(normalize_header, row)):
            if key in mandatory_columns:
                positions.setdefault(key, position)
        if len(positions) == len(mandatory_columns):  # the header: the first row holding them all
            rows.header_index, rows.positions = len(rows.first) - 1, positions
        if rows.header_index >= 0 or len(rows.first) == HEADER_SEARCH_ROWS:
            break
    if rows.header_index < 0:
        return rows
    rows.columns = [[] for _ in mandatory_columns]
    appends = [(column.append, rows.positions[name]) for column, name in zip(rows.columns, mandatory_columns)]
    while True:
        try:
            for row in iterator:
                for append, position in appends:
                    append(row[position])
            return rows
        except ValueError:
            rows.unreadable.append(rows.header_index + len(rows.columns[0]) + 2)
            for column in rows.columns:
                column.append("")


def _select(rows: _Rows, mandatory_columns: Sequence[str], scan: guard.SheetScan, entity: str,
            name: str) -> SheetData:
    if rows.header_index < 0:
        raise _no_header(rows.first, mandatory_columns, scan, entity, name)
    header = rows.first[rows.header_index]
    extras = [str(cell).strip() for position, cell in enumerate(header)
              if normalize_header(cell) and position not in rows.positions.values()]
    if extras:
        logger.warning("%s file %s: ignoring extra column(s) %s", entity, name,
                       ", ".join(safe_text(extra) for extra in extras[:20]) + (", ..." if len(extras) > 20 else ""))
    size, width = len(rows.columns[0]), len(mandatory_columns)
    source_rows = np.arange(size, dtype="int64") + (rows.header_index + 2)
    block = np.empty((width, size), dtype=object)  # the frame's storage, filled in place
    for index, column in enumerate(rows.columns):
        block[index] = column
        column.clear()
    blank = block[0] == ""
    for cells in block[1:]:  # blank: every cell empty
        candidates = np.flatnonzero(blank)
        blank[candidates] = cells[candidates] == ""
    blank[np.isin(source_rows, rows.unreadable)] = False
    filled = np.flatnonzero(~blank)
    # Blank rows after the last record are formatting leftovers, not counted.
    blank_rows = int(blank[: filled[-1] + 1].sum()) if len(filled) else 0
    if len(filled) < size:
        block, source_rows = block[:, filled], source_rows[filled]
    frame = pd.DataFrame(block.T, columns=list(mandatory_columns), dtype=object, copy=False)
    frame[SOURCE_ROW] = source_rows
    if frame.empty:
        raise InputFileError(f"{entity} file {name} has a header but no data rows")
    return SheetData(frame=frame, sheet=scan.name, extra_columns=extras, blank_rows=blank_rows,
                     skipped_header_rows=rows.header_index, unreadable=rows.unreadable)


def _no_header(rows: list[list[Any]], mandatory_columns: Sequence[str], scan: guard.SheetScan, entity: str,
               name: str) -> InputFileError:
    seen = next((cells for cells in rows[:HEADER_SEARCH_ROWS] if any(c not in (None, "") for c in cells)), None)
    where = f"sheet {scan.name!r} (sheets: {', '.join(scan.sheet_names)})"
    if seen is None:
        return InputFileError(f"{entity} file {name} is empty (no header row) in {where}")
    found = {normalize_header(cell) for cell in seen}
    missing = [column for column in mandatory_columns if column not in found]
    text = " | ".join(_CONTROL.sub("", str(cell)) for cell in seen if cell not in (None, ""))
    shown = text[:40] + ("..." if len(text) > 40 else "")
    hint = "; is the header row missing?" if len(missing) == len(mandatory_columns) else ""
    return InputFileError(f"{entity} file {name}: no row among the first {HEADER_SEARCH_ROWS} of {where} holds "
                          f"every mandatory column; lacks mandatory column(s) {', '.join(missing)} (first row seen: "
                          f"{shown!r}{hint})")
