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
import gc
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from .errors import ConfigError, InputFileError
from .redact import safe_text

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
    # column -> (codes, distinct values) for the columns the Arrow reader already grouped:
    # ``distinct[codes]`` are exactly ``frame[column]``'s cells. The cleaner reuses them instead
    # of hashing a million strings again (see clean.clean_appointments(encoded=...)).
    encoded: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def normalize_header(name: Any) -> str:
    """``' Booking  ID '`` -> ``'booking_id'``: case- and whitespace-insensitive matching."""
    return re.sub(r"\s+", "_", str(name if name is not None else "").strip()).lower()


def available_readers() -> list[str]:
    """Readers importable here, fastest first."""
    return _available_readers()


def _available_readers(first_only: bool = False) -> list[str]:
    """``first_only``: stop at the first one, without importing the slower ones (openpyxl
    alone takes 0.1 s)."""
    found = []
    # fastexcel hands its data over as Arrow: it needs pyarrow too.
    for name, modules in (("fastexcel", ("fastexcel", "pyarrow")), ("calamine", ("python_calamine",)),
                          ("openpyxl", ("openpyxl",))):
        try:
            for module in modules:
                __import__(module)
        except ImportError:
            continue
        found.append(name)
        if first_only:
            break
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
        candidates = _available_readers(first_only=True)
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
        if not positions:  # no header row at all: the first row is data, never echo it
            raise InputFileError(f"{entity} file {path.name} lacks mandatory column(s) {', '.join(missing)} "
                                 "(no known column in the first row: is the header row missing?)")
        found = [safe_text(str(h).strip()) for h in header if h is not None and str(h).strip()]
        raise InputFileError(
            f"{entity} file {path.name} lacks mandatory column(s) {', '.join(missing)} "
            f"(found: {', '.join(found[:20]) + (', ...' if len(found) > 20 else '') or 'none'})"
        )
    if extras:
        logger.warning("%s file %s: ignoring extra column(s) %s", entity, path.name,
                       ", ".join(safe_text(name) for name in extras[:20]) + (", ..." if len(extras) > 20 else ""))
    selected = [columns[positions[name]] for name in mandatory_columns]
    size = len(selected[0].codes) if isinstance(selected[0], _EncodedText) else len(selected[0])
    # Rows blank in every mandatory column are formatting leftovers, not records. (Column by
    # column, each one checked only on the rows still blank so far.)
    blank = _empty_cells(selected[0], None)
    for column in selected[1:]:
        rows = np.flatnonzero(blank)
        if not len(rows):
            break
        blank[rows] = _empty_cells(column, rows)
    blank_count = int(blank.sum())
    kept = np.flatnonzero(~blank) if blank_count else None
    source_rows = np.arange(first_row, first_row + size, dtype="int64")
    # The frame's storage, filled in place: one object block, no copy when the frame is made.
    block = np.empty((len(selected), size - blank_count), dtype=object)
    encoded = {}
    for row, (name, column) in enumerate(zip(mandatory_columns, selected)):
        if isinstance(column, _EncodedText):
            if kept is not None:
                column = _EncodedText(column.codes[kept], column.distinct)
            np.take(column.distinct, column.codes, out=block[row], mode="clip")
            encoded[name] = column
        else:
            values = np.asarray(column, dtype=object)
            block[row] = values if kept is None else values[kept]
    if kept is not None:
        source_rows = source_rows[kept]
    frame = pd.DataFrame(block.T, columns=list(mandatory_columns), dtype=object, copy=False)
    frame[SOURCE_ROW] = source_rows
    if frame.empty:
        raise InputFileError(f"{entity} file {path.name} has a header but no data rows")
    return SheetData(
        frame=frame,
        reader=reader,
        extra_columns=extras,
        blank_rows=blank_count,
        encoded={name: (column.codes, column.distinct) for name, column in encoded.items()},
    )


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
    # eager: straight to one Arrow record batch (no intermediate lazy sheet, ~25 % faster).
    table = workbook.load_sheet(sheet if sheet is not None else 0, header_row=0, dtypes="string", eager=True)
    header = list(table.schema.names)
    # Arrow encodes outside the GIL: two columns at a time on a 2-core machine.
    with ThreadPoolExecutor(max_workers=2) as workers:
        columns = list(workers.map(_arrow_text, [table.column(i) for i in range(table.num_columns)]))
    if header and all(name.startswith("__UNNAMED__") for name in header):
        return [], [], 2
    header = [None if name.startswith("__UNNAMED__") else name for name in header]
    return header, columns, 2


def _empty_cells(column: Any, rows: Optional[np.ndarray]) -> np.ndarray:
    """Which cells of ``column`` (at ``rows``, or all) are empty (None)."""
    if isinstance(column, _EncodedText):
        codes = column.codes if rows is None else column.codes[rows]
        distinct = column.distinct
        if not len(distinct) or distinct[-1] is not None:
            return np.zeros(len(codes), dtype=bool)
        return codes == len(distinct) - 1
    values = np.asarray(column, dtype=object)
    return pd.isna(values if rows is None else values[rows])


class _EncodedText:
    """A column read through Arrow, dictionary-encoded (in C++, without the GIL): ``distinct``
    (object array of its distinct str values, then None if any cell is empty) and ``codes``
    (int32, one per cell). ``distinct[codes]`` are the cells, one Python object per distinct
    string. The cleaner reuses the codes instead of hashing a million strings again."""

    __slots__ = ("codes", "distinct")

    def __init__(self, codes: np.ndarray, distinct: np.ndarray) -> None:
        self.codes = codes
        self.distinct = distinct

    def cells(self) -> np.ndarray:
        return self.distinct[self.codes]


def _arrow_text(column: Any) -> _EncodedText:
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column)  # empty cells: null codes
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object, copy=False)
    codes = encoded.indices
    if codes.null_count:
        distinct = np.append(distinct, np.array([None], dtype=object))
        codes = codes.fill_null(len(distinct) - 1)
    return _EncodedText(codes.to_numpy(zero_copy_only=False).astype(np.int32, copy=False), distinct)


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
    padding = (None,) * width
    # Rows are turned into columns a block at a time (zip(*block) transposes in C), each
    # column rendered by one comprehension: a fraction of a per-cell loop's cost.
    # The cyclic garbage collector is paused meanwhile: blocks of row tuples outlive its young
    # generation, so it kept running full collections that walk the growing columns (1M rows:
    # ~11 s of a 33 s openpyxl read). Nothing here makes reference cycles; it resumes after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        while width:
            block = list(islice(rows, _ROW_BLOCK))
            if not block:
                break
            if min(map(len, block)) < width:  # zip stops at the shortest row: pad short rows
                block = [tuple(cells) + padding[len(cells):] if len(cells) < width else cells for cells in block]
            for column, cells in zip(columns, zip(*block)):
                column.extend(_column_text(cells))
    finally:
        if collecting:
            gc.enable()
    return header, columns, header_row + 1


_ROW_BLOCK = 8192


def _column_text(cells: Sequence[Any]) -> list[Optional[str]]:
    """:func:`cell_text` of every cell, the common cases (empty, text, integer) inlined."""
    return [
        None if value is None
        else value if (kind := value.__class__) is str and value
        else str(value) if kind is int
        else cell_text(value)
        for value in cells
    ]


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
