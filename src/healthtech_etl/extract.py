"""Read one sheet of an .xlsx workbook into a frame of *cell text*.

Every reader returns the same thing: one object column per mandatory column holding the
cell as text (or None when empty), plus ``source_row``, the spreadsheet row number (header =
row 1). Nothing is typed here on purpose: readers that infer types from the first rows turn
``'37X'`` into null, and pandas' ``datetime64[ns]`` turns years after 2262 into NaT. The
cleaning step judges every cell itself.

Readers, fastest first: fastexcel (all columns forced to string), python-calamine, openpyxl
(the only one in the AWS Glue runtime). All three render a cell the same way:
integers and integral floats as ``"104"``, other floats as ``repr``, booleans as
``"true"``/``"false"``, date cells as ``"YYYY-MM-DD HH:MM:SS"``.
"""

import datetime as dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from .errors import ConfigError, InputFileError

logger = logging.getLogger(__name__)

READERS = ("auto", "fastexcel", "calamine", "openpyxl")
SOURCE_ROW = "source_row"


@dataclass
class SheetData:
    """What was read from one sheet."""

    frame: pd.DataFrame
    reader: str
    extra_columns: list[str] = field(default_factory=list)
    blank_rows: int = 0


def normalize_header(name: Any) -> str:
    """``' Booking  ID '`` -> ``'booking_id'``: case- and whitespace-insensitive matching."""
    return re.sub(r"\s+", "_", str(name if name is not None else "").strip()).lower()


def available_readers() -> list[str]:
    """Readers importable here, fastest first."""
    found = []
    for name, module in (("fastexcel", "fastexcel"), ("calamine", "python_calamine"), ("openpyxl", "openpyxl")):
        try:
            __import__(module)
        except ImportError:
            continue
        found.append(name)
    return found


def read_sheet(
    path: Path,
    mandatory_columns: Sequence[str],
    sheet: Optional[str] = None,
    reader: str = "auto",
    entity: str = "workbook",
) -> SheetData:
    """Read the first sheet (or ``sheet``) of ``path`` keeping ``mandatory_columns``.

    Raises :class:`InputFileError` for a missing, unreadable or empty file, a missing sheet
    or a missing mandatory column."""
    if reader not in READERS:
        raise ConfigError(f"unknown reader {reader!r}; choose one of {', '.join(READERS)}")
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{entity} file not found: {path}")
    if reader == "auto":
        candidates = available_readers()
        if not candidates:
            raise ConfigError("no xlsx reader installed (need fastexcel, python-calamine or openpyxl)")
        reader = candidates[0]
    read_rows = _ROW_READERS[reader]
    try:
        header, columns, first_row = read_rows(path, sheet)
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(
            f"cannot read {entity} file {path.name} with {reader}: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    return _select_columns(header, columns, first_row, mandatory_columns, reader, entity, path)


def _select_columns(
    header: list[Any],
    columns: list[list[Optional[str]]],
    first_row: int,
    mandatory_columns: Sequence[str],
    reader: str,
    entity: str,
    path: Path,
) -> SheetData:
    if not header or all(normalize_header(name) == "" for name in header):
        raise InputFileError(f"{entity} file {path.name} is empty (no header row)")
    positions: dict[str, int] = {}
    extras: list[str] = []
    for position, name in enumerate(header):
        key = normalize_header(name)
        if key in mandatory_columns and key not in positions:
            positions[key] = position
        elif key:
            extras.append(str(name).strip())
    missing = [name for name in mandatory_columns if name not in positions]
    if missing:
        raise InputFileError(
            f"{entity} file {path.name} lacks mandatory column(s) {', '.join(missing)} "
            f"(found: {', '.join(str(h).strip() for h in header if h is not None and str(h).strip()) or 'none'})"
        )
    if extras:
        logger.warning("%s file %s: ignoring extra column(s) %s", entity, path.name, ", ".join(extras))
    data = {name: columns[positions[name]] for name in mandatory_columns}
    frame = pd.DataFrame(data, dtype=object)
    frame[SOURCE_ROW] = pd.RangeIndex(first_row, first_row + len(frame), dtype="int64")
    # Rows blank in every mandatory column are formatting leftovers, not records.
    blank = frame[list(mandatory_columns)].isna().all(axis=1)
    blank_count = int(blank.sum())
    if blank_count:
        frame = frame[~blank].reset_index(drop=True)
    if frame.empty:
        raise InputFileError(f"{entity} file {path.name} has a header but no data rows")
    return SheetData(frame=frame, reader=reader, extra_columns=extras, blank_rows=blank_count)


# --- readers: each returns (header cells, columns of cell text, spreadsheet row of first data row)

RowReader = Callable[[Path, Optional[str]], tuple[list[Any], list[list[Optional[str]]], int]]


def _read_fastexcel(path: Path, sheet: Optional[str]) -> tuple[list[Any], list[list[Optional[str]]], int]:
    import fastexcel

    workbook = fastexcel.read_excel(str(path))
    if sheet is not None and sheet not in workbook.sheet_names:
        raise InputFileError(f"{path.name} has no sheet {sheet!r} (sheets: {', '.join(workbook.sheet_names)})")
    if not workbook.sheet_names:
        raise InputFileError(f"{path.name} has no sheets")
    # dtypes="string" for every column: fastexcel must not infer types from a sample of rows.
    loaded = workbook.load_sheet(sheet if sheet is not None else 0, header_row=0, dtypes="string")
    table = loaded.to_arrow()
    header = list(table.schema.names)
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    if header and all(name.startswith("__UNNAMED__") for name in header):
        return [], [], 2
    header = [None if name.startswith("__UNNAMED__") else name for name in header]
    return header, columns, 2


def _read_calamine(path: Path, sheet: Optional[str]) -> tuple[list[Any], list[list[Optional[str]]], int]:
    import python_calamine

    workbook = python_calamine.CalamineWorkbook.from_path(str(path))
    if sheet is not None and sheet not in workbook.sheet_names:
        raise InputFileError(f"{path.name} has no sheet {sheet!r} (sheets: {', '.join(workbook.sheet_names)})")
    if not workbook.sheet_names:
        raise InputFileError(f"{path.name} has no sheets")
    data = workbook.get_sheet_by_name(sheet) if sheet is not None else workbook.get_sheet_by_index(0)
    rows = data.to_python(skip_empty_area=False)
    return _rows_to_columns(iter(rows), 1)


def _read_openpyxl(path: Path, sheet: Optional[str]) -> tuple[list[Any], list[list[Optional[str]]], int]:
    import openpyxl

    workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    try:
        if sheet is not None and sheet not in workbook.sheetnames:
            raise InputFileError(f"{path.name} has no sheet {sheet!r} (sheets: {', '.join(workbook.sheetnames)})")
        worksheet = workbook[sheet] if sheet is not None else workbook.worksheets[0]
        return _rows_to_columns(worksheet.iter_rows(values_only=True), 1)
    finally:
        workbook.close()


def _rows_to_columns(rows: Any, header_row: int) -> tuple[list[Any], list[list[Optional[str]]], int]:
    header_cells: Optional[Sequence[Any]] = None
    for cells in rows:
        header_cells = cells
        break
    if header_cells is None:
        return [], [], header_row + 1
    header = [None if cell in (None, "") else cell for cell in header_cells]
    while header and header[-1] is None:
        header.pop()
    width = len(header)
    columns: list[list[Optional[str]]] = [[] for _ in range(width)]
    for cells in rows:
        length = len(cells)
        for index in range(width):
            columns[index].append(cell_text(cells[index]) if index < length else None)
    return header, columns, header_row + 1


def cell_text(value: Any) -> Optional[str]:
    """Render one cell as fastexcel's forced-string mode does (see module docstring)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S") if value.year >= 1000 else value.isoformat(" ")
        return f"{text}.{value.microsecond:06d}" if value.microsecond else text
    if isinstance(value, dt.date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d} 00:00:00"
    return str(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "no details")[:200]


_ROW_READERS: dict[str, RowReader] = {
    "fastexcel": _read_fastexcel,
    "calamine": _read_calamine,
    "openpyxl": _read_openpyxl,
}
