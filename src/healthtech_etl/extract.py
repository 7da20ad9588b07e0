"""Read one sheet of an .xlsx workbook into a frame of *cell text*.

Every reader returns the same thing: one object column per mandatory column holding the
cell as text (or None when empty), plus ``source_row``, the spreadsheet's own row number. The
header is the first row, among the first 20, holding every mandatory column; rows above it are
skipped and counted. Nothing is typed here on purpose: readers that infer types from the first
rows turn ``'37X'`` into null, and pandas' ``datetime64[ns]`` turns years after 2262 into NaT.
The cleaning step judges every cell itself.

Readers, fastest first: fastexcel (all columns forced to string), python-calamine, openpyxl
(the only one in the AWS Glue runtime). All three render a cell the same way: integers and
integral floats as ``"104"``, other floats as ``repr``, date cells as
``"YYYY-MM-DD HH:MM:SS[.mmm]"``. Where a reader cannot be exact (integers past 2**53, error
cells, booleans, date serials outside Excel's range, its own float printing, ``_xHHHH_``
escapes, a stray far cell), :mod:`.sheet_scan` decides or renders the cell from the XML; cells
that are not a value start with :data:`~.sheet_scan.NOT_A_VALUE`. README: "What each reader
does, and how they are made to agree".
"""

import datetime as dt
import gc
import logging
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from . import overlong
from .dense_read import HEADER_SEARCH_ROWS, ArrowRead, normalize_header, read_fastexcel
from .dense_read import find_header as _find_header
from .errors import ConfigError, InputFileError
from .redact import safe_text
from .sheet_scan import (
    MEASURE_FIRST_BYTES,
    NOT_A_VALUE,
    SheetPrefetch,
    SheetScan,
    full_scan,
    literal_scan,
    measure_extent,
    scan_sheet,
)

logger = logging.getLogger(__name__)

READERS = ("auto", "fastexcel", "calamine", "openpyxl")
SOURCE_ROW = "source_row"
# Control characters other than tab, newline and carriage return (whitespace).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


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
    # Rows above the header (blank, or a title and an export date), skipped.
    skipped_header_rows: int = 0
    sheet: str = ""
    # The early read's judgement of the distinct values (waits for it; see dense_read), or None.
    judged: Optional[Callable[[], Any]] = field(default=None, compare=False, repr=False)


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
    max_sheet_bytes: Optional[int] = None,
    prefetched: Optional[SheetPrefetch] = None,
) -> SheetData:
    """Read the first sheet (or ``sheet``) of ``path`` keeping ``mandatory_columns``.

    The sheet XML is pre-scanned first (:mod:`.sheet_scan`): its size is checked, a sheet whose
    extent would make a dense reader allocate far more cells than it holds goes to the
    streaming reader (openpyxl), and cells no reader renders exactly are rendered from the XML.
    Text over 32,767 characters is cut first, the readers reading a copy (:mod:`.overlong`).
    Raises :class:`InputFileError` for a missing, unreadable, oversized or empty file, a missing
    sheet, or no header row with every mandatory column in the first 20 rows. ``prefetched``:
    the pre-scan already started for this file and sheet (:class:`~.sheet_scan.SheetPrefetch`)."""
    try:
        with overlong.Defuser(entity) as defuser:
            return _read_sheet(path, mandatory_columns, sheet, reader, entity, max_sheet_bytes, prefetched, defuser)
    finally:
        if prefetched is not None:
            prefetched.drop_read()  # an early read not taken: this read went another way


def _read_sheet(path: Path, mandatory_columns: Sequence[str], sheet: Optional[str], reader: str, entity: str,
                max_sheet_bytes: Optional[int], prefetched: Optional[SheetPrefetch],
                defuser: overlong.Defuser) -> SheetData:
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
    if prefetched is not None and (max_sheet_bytes is not None or not prefetched.is_for(path, sheet)):
        prefetched = None
    if prefetched is not None:
        scan = _scan_or_fail(prefetched.result, entity, path)
    else:
        scan = _scan_or_fail(lambda: scan_sheet(path, sheet, entity, max_sheet_bytes), entity, path)
    original = path
    judged = None
    path = _scan_or_fail(lambda: defuser.defuse(path, scan.member), entity, path)  # maybe a copy (same name)
    # Measure the real extent before a dense reader allocates for it (see sheet_scan): a small
    # sheet in the literal scan's pass, a larger one in a pass of its own.
    if reader in _DENSE_READERS and not scan.measured:
        if scan.declared_bytes <= MEASURE_FIRST_BYTES:
            _scan_or_fail(lambda: literal_scan(path, scan, measure=True), entity, path)
        else:
            _scan_or_fail(lambda: measure_extent(path, scan, entity, max_sheet_bytes), entity, path)
    if reader in _DENSE_READERS and not scan.dense_ok:
        logger.warning(
            "%s file %s: sheet %r spans %s cells for %s real ones (a stray far cell?); reading it with "
            "the streaming reader (openpyxl) instead of %s", entity, path.name, scan.sheet_name,
            f"{scan.dense_cells:,}", f"{scan.cell_count:,}", reader,
        )
        reader = "openpyxl"
    # The literal scan inflates the XML beside the reader (fastexcel works without the GIL),
    # or already runs in the prefetch.
    with ThreadPoolExecutor(max_workers=1) as background:
        literal = None
        if not (scan.full or scan.literal or prefetched is not None and prefetched.literal_runs()):
            literal = background.submit(literal_scan, path, scan)
        try:
            # fastexcel's read started early (see dense_read), taken only now the sheet is
            # known to be safe for it and unchanged; else (or if it failed) it is read here.
            early = (prefetched.dense_read(path, scan.sheet_name)
                     if prefetched is not None and reader == "fastexcel" and scan.dense_ok and path is original
                     else None)
            if early is not None:
                logger.info("%s file %s: fastexcel's read started early, beside the scans, taken", entity, path.name)
                sheet_rows = _fastexcel_rows(early, scan)
                judged = early.judged
            else:
                if prefetched is not None:
                    prefetched.drop_read()
                sheet_rows = _ROW_READERS[reader](path, scan, mandatory_columns)
        except InputFileError:
            raise
        except Exception as exc:
            raise InputFileError(
                f"cannot read {entity} file {path.name} with {reader}: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
        try:
            if literal is not None:
                literal.result()
            if prefetched is not None:
                prefetched.literal_into(scan)
            # python-calamine prints a date-formatted serial past 9999 as a plain number, which
            # leaves no trace: with it, the full scan always runs.
            if sheet_rows.header_row and not scan.full and (
                reader == "calamine" or _unexplained_traces(sheet_rows, scan, mandatory_columns)
            ):
                full_scan(path, scan, entity, max_sheet_bytes)
        except InputFileError:
            raise
        except Exception as exc:  # a damaged deflate stream, a bad CRC...
            raise InputFileError(
                f"cannot read {entity} file {path.name}: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
    data = _select_columns(sheet_rows, scan, mandatory_columns, reader, entity, path)
    data.judged = judged
    return data


# Renderings that may come from a cell some reader gets wrong (see sheet_scan): 16+ digits
# (an integer past 2**53, or 1E+20), decimals and exponents (checked further below), dates
# before 1900 or past 9998, a bare time (a date serial under 1), error values, booleans.
# Anchored, no look-around: the same text is an RE2 pattern for Arrow.
_TRACE = (
    r"^(?:[+-]?[0-9]{16,}|[+-]?[0-9]*\.[0-9]+|[+-]?[0-9.]+[eE][+-]?[0-9]+|\+.*"
    r"|(?:0[0-9]{3}|1[0-8][0-9]{2}|9999|[0-9]{5,})-.*|[0-9]{1,2}:[0-9]{2}:[0-9]{2}.*"
    r"|#[A-Z0-9/_]+[!?A]?|true|false|TRUE|FALSE)$"
)
_DECIMAL = re.compile(r"^[+-]?[0-9]*\.[0-9]+$|^[+-]?[0-9.]+[eE][+-]?[0-9]+$")


def _unexplained_traces(rows: "_SheetRows", scan: SheetScan, mandatory_columns: Sequence[str]) -> bool:
    """Whether the cells read hold a trace (:data:`_TRACE`) of a cell some reader renders
    inexactly that the literal scan did not render itself. Checked on distinct values (Arrow's
    RE2 when installed), then on the few cells holding them. A decimal is a trace only if it
    is not its float's ``repr``: ``"3.0"`` reads the same everywhere."""
    first_row = rows.header_row + 1
    for name, column in zip(mandatory_columns, rows.columns):
        if isinstance(column, _EncodedText):
            traces = _trace_positions(column.distinct, column.arrow_distinct)
            if not len(traces):
                continue
            is_trace = np.zeros(len(column.distinct), dtype=bool)  # a lookup by code: no sort, unlike isin
            is_trace[traces] = True
            hits = np.flatnonzero(is_trace[column.codes])
        else:
            cells = np.asarray(column, dtype=object)
            distinct = pd.unique(cells)
            traces = _trace_positions(distinct)
            if not len(traces):
                continue
            hits = np.flatnonzero(pd.Series(cells, dtype=object).isin(distinct[traces]).to_numpy())
        sheet_column = rows.positions[name] + rows.column_offset
        for position in hits:
            if (first_row + int(position), sheet_column) not in scan.corrections:
                return True
    return False


def _is_trace(value: str) -> bool:
    """The reference judgement of one value matching :data:`_TRACE`."""
    if not _DECIMAL.match(value):
        return True
    try:
        return repr(float(value)) != value
    except ValueError:
        return True


def _trace_positions(distinct: np.ndarray, arrow_distinct: Any = None) -> np.ndarray:
    """Positions in ``distinct`` (text values, None allowed) of the traces: values matching
    :data:`_TRACE` that :func:`_is_trace` confirms. Vectorised with Arrow when installed:
    decimals matching :data:`_PLAIN_DECIMAL` (a common form) are known to be their float's
    ``repr`` and need no Python call. ``arrow_distinct``: the same values as an Arrow array."""
    from . import _arrow

    if _arrow.pc is None:
        series = pd.Series(distinct, dtype=object)
        matching = np.flatnonzero(series.str.match(_TRACE, na=False).to_numpy(dtype=bool))
        return np.array([i for i in matching if _is_trace(distinct[i])], dtype=np.int64)
    pa, pc = _arrow.pa, _arrow.pc
    array = arrow_distinct if arrow_distinct is not None else pa.array(distinct, type=pa.string(), from_pandas=True)
    matching = pc.fill_null(pc.match_substring_regex(array, _TRACE), False)
    plain = pc.and_(pc.fill_null(pc.match_substring_regex(array, _PLAIN_DECIMAL), False),
                    pc.less_equal(pc.utf8_length(array), _PLAIN_DECIMAL_CHARS))
    candidates = np.flatnonzero(pc.and_not(matching, plain).to_numpy(zero_copy_only=False))
    return np.array([i for i in candidates if _is_trace(distinct[i])], dtype=np.int64)


# Decimals that are exactly their float's repr (so no trace): at most 15 significant digits
# (a double holds every such decimal apart, so repr - the shortest string that reads back -
# is that decimal), no leading zero, a fraction without trailing zeros (or ".0"), and within
# repr's plain notation (1e-4 <= |x| < 1e16). At most 16 characters: 15 digits and the point.
_PLAIN_DECIMAL = r"^-?(?:[1-9][0-9]*\.(?:0|[0-9]*[1-9])|0\.0{0,3}[1-9](?:[0-9]*[1-9])?)$"
_PLAIN_DECIMAL_CHARS = 16


@dataclass
class _SheetRows:
    """A reader's output: the header it found and the mandatory columns' cells below it."""

    header_row: int  # spreadsheet row of the header (0: none found)
    header: list[Any]  # header cells (reader positions)
    positions: dict[str, int]  # mandatory column -> reader position
    columns: list[Any]  # one per mandatory column: list of cell text or _EncodedText
    first_rows: list[list[Optional[str]]]  # the first rows' cells as text (error messages)
    column_offset: int = 0  # reader position + offset = 0-based spreadsheet column


def _no_header(rows: "_SheetRows", scan: SheetScan, mandatory_columns: Sequence[str], entity: str,
               path: Path) -> InputFileError:
    seen = next((cells for cells in rows.first_rows if any(c not in (None, "") for c in cells)), None)
    where = f"sheet {scan.sheet_name!r} (sheets: {', '.join(scan.sheet_names)})"
    if seen is None:
        return InputFileError(f"{entity} file {path.name} is empty (no header row) in {where}")
    found = {normalize_header(cell) for cell in seen}
    missing = [name for name in mandatory_columns if name not in found]
    text = " | ".join(_printable(str(cell)) for cell in seen if cell not in (None, ""))
    shown = text[:40] + ("..." if len(text) > 40 else "")
    # No mandatory column at all: the row seen is most likely data, shown only as far as above.
    hint = "; is the header row missing?" if len(missing) == len(mandatory_columns) else ""
    return InputFileError(
        f"{entity} file {path.name}: no row among the first {HEADER_SEARCH_ROWS} of {where} holds every "
        f"mandatory column; lacks mandatory column(s) {', '.join(missing)} (first row seen: {shown!r}{hint})"
    )


def _printable(text: str) -> str:
    return _CONTROL.sub("", text).replace(NOT_A_VALUE, "")


def _select_columns(
    rows: _SheetRows, scan: SheetScan, mandatory_columns: Sequence[str], reader: str, entity: str, path: Path
) -> SheetData:
    if not rows.header_row:
        raise _no_header(rows, scan, mandatory_columns, entity, path)
    extras = [
        str(name).strip() for position, name in enumerate(rows.header)
        if normalize_header(name) and position not in rows.positions.values()
    ]
    if extras:
        logger.warning("%s file %s: ignoring extra column(s) %s", entity, path.name,
                       ", ".join(safe_text(name) for name in extras[:20]) + (", ..." if len(extras) > 20 else ""))
    selected = list(rows.columns)
    size = len(selected[0].codes) if isinstance(selected[0], _EncodedText) else len(selected[0])
    first_row = rows.header_row + 1
    _apply_corrections(selected, rows, scan, mandatory_columns, first_row, size)
    # Rows blank in every mandatory column are formatting leftovers, not records. (Column by
    # column, each one checked only on the rows still blank so far.)
    blank = _empty_cells(selected[0], None)
    for column in selected[1:]:
        rows_left = np.flatnonzero(blank)
        if not len(rows_left):
            break
        blank[rows_left] = _empty_cells(column, rows_left)
    # Blank rows after the last record are not counted: readers disagree on where a sheet ends.
    filled = np.flatnonzero(~blank)
    blank_count = int(blank[: filled[-1] + 1].sum()) if len(filled) else 0
    kept = filled if len(filled) < size else None
    source_rows = np.arange(first_row, first_row + size, dtype="int64")
    # The frame's storage, filled in place: one object block, no copy when the frame is made.
    block = np.empty((len(selected), len(filled)), dtype=object)
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
        skipped_header_rows=rows.header_row - 1,
        sheet=scan.sheet_name,
    )


def _apply_corrections(
    selected: list[Any], rows: _SheetRows, scan: SheetScan, mandatory_columns: Sequence[str], first_row: int,
    size: int,
) -> None:
    """Put :func:`render_raw`'s rendering over the reader's for the cells the scan flagged."""
    if not scan.corrections:
        return
    by_column = {rows.positions[name] + rows.column_offset: index for index, name in enumerate(mandatory_columns)}
    found: dict[int, tuple[list[int], list[Optional[str]]]] = {}
    for (row, column), text in scan.corrections.items():
        index = by_column.get(column)
        position = row - first_row
        if index is None or not 0 <= position < size:
            continue
        positions, texts = found.setdefault(index, ([], []))
        positions.append(position)
        texts.append(text)
    for index, (positions, texts) in found.items():
        cells = selected[index]
        if isinstance(cells, _EncodedText):
            selected[index] = _recode(cells, np.array(positions, dtype=np.int64), texts)
        else:
            for position, text in zip(positions, texts):
                cells[position] = text


def _recode(column: "_EncodedText", positions: np.ndarray, texts: list[Optional[str]]) -> "_EncodedText":
    """``column`` with the cells at ``positions`` set to ``texts``, still grouped: each text
    gets the code of the equal distinct value, or a new one (values stay distinct, None stays
    last: the cleaner's duplicate check and blank-row check rely on both)."""
    distinct = column.distinct
    has_none = bool(len(distinct)) and distinct[-1] is None
    values = distinct[:-1] if has_none else distinct
    wanted = pd.unique(np.array([text for text in texts if text is not None], dtype=object))
    known = pd.Series(values, dtype=object)
    existing = known[known.isin(wanted)]
    code_of = dict(zip(existing.tolist(), existing.index.tolist()))
    added = [text for text in wanted if text not in code_of]
    for offset, text in enumerate(added):
        code_of[text] = len(values) + offset
    need_none = has_none or any(text is None for text in texts)
    none_code = len(values) + len(added)
    new_distinct = np.empty(none_code + int(need_none), dtype=object)
    new_distinct[: len(values)] = values
    new_distinct[len(values): none_code] = added
    codes = column.codes.copy()
    if has_none and added:  # the empty cells' code moves behind the added values
        codes[codes == len(values)] = none_code
    codes[positions] = [none_code if text is None else code_of[text] for text in texts]
    return _EncodedText(codes.astype(np.int32, copy=False), new_distinct)


# --- readers: each returns the mandatory columns' cells below the header it found ------------


def _read_fastexcel(path: Path, scan: SheetScan, mandatory_columns: Sequence[str]) -> _SheetRows:
    return _fastexcel_rows(read_fastexcel(path, scan.sheet_name, mandatory_columns), scan)


def _fastexcel_rows(read: ArrowRead, scan: SheetScan) -> _SheetRows:
    """fastexcel's Arrow read (here or in the early child: see dense_read) -> the columns."""
    if not read.header_row:
        return _SheetRows(0, [], {}, [], read.first_rows)
    with ThreadPoolExecutor(max_workers=2) as workers:
        columns = list(workers.map(_encoded_text, read.columns))
    # Its columns start at the sheet's first column holding a value: find that offset.
    first_valued = next((i for i, cell in enumerate(read.header) if cell not in (None, "")), 0)
    column = scan.first_valued_column(read.header_row)
    offset = 0 if column is None else column - first_valued
    if read.error_cells:  # error cells: the literal scan renders them (t="e"); a check, cheap
        logger.debug("fastexcel reported %d error cell(s)", read.error_cells)
    return _SheetRows(read.header_row, read.header, read.positions, columns, read.first_rows, column_offset=offset)


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

    __slots__ = ("codes", "distinct", "arrow_distinct")

    def __init__(self, codes: np.ndarray, distinct: np.ndarray, arrow_distinct: Any = None) -> None:
        self.codes = codes
        self.distinct = distinct
        # The str values of ``distinct`` (its leading part) as the Arrow array they came from.
        self.arrow_distinct = arrow_distinct

    def cells(self) -> np.ndarray:
        return self.distinct[self.codes]


def _encoded_text(encoded: Any) -> _EncodedText:
    """An Arrow dictionary-encoded column (empty cells: null codes) -> :class:`_EncodedText`."""
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object, copy=False)
    codes = encoded.indices
    nulls = codes.null_count
    if nulls:
        distinct = np.append(distinct, np.array([None], dtype=object))
        codes = codes.fill_null(len(distinct) - 1)
    codes = codes.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    # An empty string cell is an empty cell, as the other readers give it.
    empty = np.flatnonzero(distinct == "")
    if len(empty):
        if not nulls:
            distinct = np.append(distinct, np.array([None], dtype=object))
        codes = np.where(codes == empty[0], len(distinct) - 1, codes).astype(np.int32)
    return _EncodedText(codes, distinct, encoded.dictionary)


def _read_calamine(path: Path, scan: SheetScan, mandatory_columns: Sequence[str]) -> _SheetRows:
    import python_calamine

    workbook = python_calamine.CalamineWorkbook.from_path(str(path))
    data = workbook.get_sheet_by_name(scan.sheet_name)
    # skip_empty_area=False: rows and columns from A1, so positions are the sheet's own.
    return _rows_to_columns(iter(data.to_python(skip_empty_area=False)), mandatory_columns)


def _read_openpyxl(path: Path, scan: SheetScan, mandatory_columns: Sequence[str]) -> _SheetRows:
    import openpyxl

    workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    try:
        worksheet = workbook[scan.sheet_name]
        # openpyxl warns for each date-styled number outside its date range: the scan renders
        # those cells itself (see sheet_scan.render_raw), so the warning is noise.
        # Ignore the declared dimension: a declared (or stray) far corner must not pad every row.
        worksheet.reset_dimensions()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*outside the limits for dates.*", category=UserWarning)
            return _rows_to_columns(worksheet.iter_rows(values_only=True), mandatory_columns, unescape=True)
    finally:
        workbook.close()


def _rows_to_columns(rows: Any, mandatory_columns: Sequence[str], unescape: bool = False) -> _SheetRows:
    """Rows from spreadsheet row 1 (tuples of cell values) -> the header and the mandatory
    columns' text below it. ``unescape``: decode ``_xHHHH_`` escapes (openpyxl keeps them)."""
    render = _column_text_unescaped if unescape else _column_text
    first_rows: list[list[Optional[str]]] = []
    header_row = 0
    positions: dict[str, int] = {}
    header: list[Any] = []
    for cells in rows:
        first_rows.append(render(cells))
        found, header, positions = _find_header(first_rows[-1:], mandatory_columns)
        if found:
            header_row = len(first_rows)
            break
        if len(first_rows) >= HEADER_SEARCH_ROWS:
            break
    if not header_row:
        return _SheetRows(0, [], {}, [], first_rows)
    wanted = [positions[name] for name in mandatory_columns]
    width = max(wanted) + 1
    columns: list[list[Optional[str]]] = [[] for _ in wanted]
    padding = (None,) * width
    # Rows are turned into columns a block at a time (zip(*block) transposes in C), each
    # column rendered by one comprehension: a fraction of a per-cell loop's cost.
    # The cyclic garbage collector is paused meanwhile: blocks of row tuples outlive its young
    # generation, so it kept running full collections that walk the growing columns (1M rows:
    # ~11 s of a 33 s openpyxl read). Nothing here makes reference cycles; it resumes after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        while True:
            block = list(islice(rows, _ROW_BLOCK))
            if not block:
                break
            if min(map(len, block)) < width:  # zip stops at the shortest row: pad short rows
                block = [tuple(cells) + padding[len(cells):] if len(cells) < width else cells for cells in block]
            transposed = list(zip(*block))
            for column, position in zip(columns, wanted):
                column.extend(render(transposed[position]))
    finally:
        if collecting:
            gc.enable()
    return _SheetRows(header_row, header, positions, columns, first_rows)


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


_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _column_text_unescaped(cells: Sequence[Any]) -> list[Optional[str]]:
    """:func:`_column_text`, ``_xHHHH_`` escapes decoded as Excel (and the Rust readers) do."""
    return [
        _ESCAPE.sub(_unescape, value) if value.__class__ is str and "_x" in value else value
        for value in _column_text(cells)
    ]


def _unescape(match: "re.Match[str]") -> str:
    return chr(int(match.group(1), 16))


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
        if not value.microsecond:
            return text
        # Whole milliseconds (every reader's date cells) as fastexcel prints them: ".667".
        micros = value.microsecond
        return f"{text}.{micros // 1000:03d}" if micros % 1000 == 0 else f"{text}.{micros:06d}"
    if isinstance(value, dt.date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d} 00:00:00"
    return str(value)


def _scan_or_fail(step: Callable[[], Any], entity: str, path: Path) -> Any:
    """Run a scan step; a damaged package (a bad deflate stream or CRC...) is an input error,
    not a crash."""
    try:
        return step()
    except (InputFileError, ConfigError):
        raise
    except Exception as exc:
        raise InputFileError(f"cannot read {entity} file {path.name}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "no details")[:200]


RowReader = Callable[[Path, SheetScan, Sequence[str]], _SheetRows]
_DENSE_READERS = ("fastexcel", "calamine")
_ROW_READERS: dict[str, RowReader] = {
    "fastexcel": _read_fastexcel,
    "calamine": _read_calamine,
    "openpyxl": _read_openpyxl,
}
