"""The fast reader's Arrow half: fastexcel's read of a sheet, its header found and the
mandatory columns grouped into Arrow dictionaries, with no pandas and no Python object per
cell. The extractor turns the result into its columns (``extract._fastexcel_rows``).

It runs in the reading process, or - on the CLI's fast path - speculatively in a forked child
started before pandas is imported (:class:`SpeculativeRead`): the read then overlaps the
libraries' import and the extent pass. A dense reader may abort its process on a stray far
cell (see :mod:`.sheet_scan`), so the child's result is used only once the extent pass in
the other worker has found the sheet safe for a dense reader; the child's memory is capped,
and it is killed as soon as its result is not needed. Both ways run the same function
(:func:`read_fastexcel`): the speculation changes when the work is done, never what it gives.
"""

import importlib
import re
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

HEADER_SEARCH_ROWS = 20
# The child's address-space cap: room for a dense read of the real data (about 1.7 GB of
# mappings for a 245 MB sheet, most of it reserved, not used) but not for a far cell's extent.
_CAP_BASE = 4 << 30
_CAP_PER_XML_BYTE = 16


def normalize_header(name: Any) -> str:
    """``' Booking  ID '`` -> ``'booking_id'``: case- and whitespace-insensitive matching."""
    return re.sub(r"\s+", "_", str(name if name is not None else "").strip()).lower()


def find_header(
    first_rows: list[list[Optional[str]]], mandatory_columns: Sequence[str]
) -> tuple[int, list[Any], dict[str, int]]:
    """The first of ``first_rows`` holding every mandatory column: (index + 1, cells,
    positions); (0, [], {}) if none does."""
    for index, cells in enumerate(first_rows[:HEADER_SEARCH_ROWS]):
        positions: dict[str, int] = {}
        for position, name in enumerate(cells):
            key = normalize_header(name)
            if key in mandatory_columns and key not in positions:
                positions[key] = position
        if len(positions) == len(mandatory_columns):
            return index + 1, list(cells), positions
    return 0, [], {}


@dataclass
class ArrowRead:
    """fastexcel's read of one sheet: the header it found (``header_row`` 0: none), the first
    rows' text, and per mandatory column its cells below the header as a dictionary-encoded
    Arrow array (an empty cell: a null code)."""

    sheet_name: str
    header_row: int
    header: list[Any]
    positions: dict[str, int]
    first_rows: list[list[Optional[str]]]
    columns: list[Any]
    error_cells: int = 0
    # Set where an early read is taken: waits for the child's judgement of the columns'
    # distinct values (clean.Judged), or None.
    judged: Optional[Callable[[], Any]] = field(default=None, compare=False, repr=False)


def read_fastexcel(path: Path, sheet_name: str, mandatory_columns: Sequence[str]) -> ArrowRead:
    """Read ``sheet_name`` with fastexcel, every column as text. Row i of its table is
    spreadsheet row i + 1 (no header row, no skipped rows; its columns start at the first one
    holding a value). Raises what fastexcel raises."""
    import fastexcel

    # pyarrow (0.2 s to import, in the early child) loads beside the parse, which releases the GIL.
    arrow = None
    if "pyarrow.compute" not in sys.modules:
        arrow = threading.Thread(target=importlib.import_module, args=("pyarrow.compute",), daemon=True)
        arrow.start()
    workbook = fastexcel.read_excel(str(path))
    # dtypes="string" for every column: fastexcel must not infer types from a sample of rows.
    # Lazy, then to Arrow with the cells it could not render (error cells, which it reads as
    # empty; the literal scan renders them). As fast as eager=True.
    lazy = workbook.load_sheet(sheet_name, header_row=None, skip_rows=0, dtypes="string")
    if arrow is not None:
        arrow.join()
    import pyarrow.compute as pc

    table, errors = lazy.to_arrow_with_errors()
    head = min(HEADER_SEARCH_ROWS, table.num_rows)
    first_rows = [list(row) for row in zip(*(table.column(i)[:head].to_pylist() for i in range(table.num_columns)))]
    header_row, header, positions = find_header(first_rows, mandatory_columns)
    error_cells = 0 if errors is None else len(errors.errors)
    if not header_row:
        return ArrowRead(sheet_name, 0, [], {}, first_rows, [], error_cells)
    wanted = [table.column(positions[name])[header_row:] for name in mandatory_columns]
    # Arrow groups outside the GIL: two columns at a time on a 2-core machine.
    with ThreadPoolExecutor(max_workers=2) as workers:
        columns = list(workers.map(pc.dictionary_encode, wanted))
    return ArrowRead(sheet_name, header_row, header, positions, first_rows, columns, error_cells)


class SpeculativeRead:
    """:func:`read_fastexcel` of a workbook in a forked child, started before anything else
    (see the module docstring). :meth:`take` gives its result once the caller knows the sheet
    is safe for a dense reader; :meth:`drop` kills it. Any failure of the child (an error, a
    crash, its memory cap) gives None: the caller then reads the usual way, which raises what
    there is to raise. Linux only, and only while the process has a single thread.

    ``judge_day_first``: after its read the child also judges the distinct values of the
    appointments columns (:func:`.clean.judge_distinct`, with that ``day_first``), beside
    the extractor's work on the read in this process; the read's ``judged`` gives them."""

    def __init__(self, path: Path, sheet: Optional[str], entity: str, mandatory_columns: Sequence[str],
                 judge_day_first: Optional[bool] = None) -> None:
        from .sheet_scan import _ForkedWork

        self.path, self.sheet = Path(path), sheet
        self._judging = judge_day_first is not None

        def work(send: Any) -> None:
            from . import overlong
            from .sheet_scan import scan_sheet

            scan = scan_sheet(self.path, sheet, entity, date_styles=False)
            if overlong.ENABLED and overlong.sheet_is_searched(scan.declared_bytes, scan.compressed_bytes):
                send("read", None)  # its text may be cut first: the extractor reads the copy
                return
            _cap_memory(scan.declared_bytes)
            cleaner = None
            if judge_day_first is not None:  # pandas loads beside the parse too
                cleaner = threading.Thread(target=importlib.import_module, args=("healthtech_etl.clean",),
                                           daemon=True)
                cleaner.start()
            read = read_fastexcel(self.path, scan.sheet_name, mandatory_columns)
            send("read", read)
            if cleaner is not None and read.header_row:
                cleaner.join()
                send("judged", _judge(read, mandatory_columns, bool(judge_day_first)))

        self._work = _ForkedWork(work)

    def take(self, path: Path, sheet_name: str) -> Optional[ArrowRead]:
        """The child's read of ``sheet_name`` of ``path`` (waits for it), or None."""
        if Path(path) != self.path:  # a copy (overlong text cut): read that instead
            self.drop()
            return None
        try:
            read = self._work.take("read")
        except Exception:  # the usual read raises it again, or reads what the child could not
            read = None
        if read is None or read.sheet_name != sheet_name:
            self.drop()
            return None
        if self._judging and read.header_row:
            read.judged = self._judged  # the child lives on until then (or is killed at exit)
        else:
            self.drop()
        return read

    def _judged(self) -> Any:
        """The child's judgement (:data:`.clean.Judged`), or None if it failed."""
        try:
            return self._work.take("judged", last=True)
        except Exception:  # the cleaner judges the values itself
            return None
        finally:
            self.drop()

    def drop(self) -> None:
        """Stop the child (idempotent)."""
        self._work.stop()


def _judge(read: ArrowRead, mandatory_columns: Sequence[str], day_first: bool) -> Any:
    """:func:`.clean.judge_distinct` of every distinct value of each column read, as the
    cleaner sees them (``extract._encoded_text``: the same objects, in dictionary order)."""
    import pandas as pd

    from . import clean

    judged = {}
    for name, column in zip(mandatory_columns, read.columns):
        values = column.dictionary.to_numpy(zero_copy_only=False).astype(object, copy=False)
        judged[name] = (len(values), clean.judge_distinct(name, pd.Series(values, dtype=object), day_first,
                                                          column.dictionary))
    return day_first, judged


def _cap_memory(xml_bytes: int) -> None:
    """Cap this process's address space: a far cell's extent then fails to allocate here (the
    child dies, the caller reads another way) instead of taking the machine's memory."""
    try:
        import resource

        cap = _CAP_BASE + _CAP_PER_XML_BYTE * max(xml_bytes, 0)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass
