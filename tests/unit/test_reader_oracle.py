"""Differential test: the reader (python-calamine behind the guard) against openpyxl as an oracle.

Workbooks are written as raw SpreadsheetML (every cell's stored type chosen here, rows and cells
written in any order); openpyxl (full mode: every cell placed at its reference) reads the same
file. Each cell must render the same (:func:`cells.cell_text`) on both sides, except for the
accepted differences below, each one a rule in the README's data rules:

1. an Excel error cell (``#N/A``...): calamine reads it empty (-> ``missing_<col>``);
2. a date-formatted number below 1 (before 1900-01-01): calamine reads a time of day, not a
   value (-> ``invalid_<col>``), openpyxl a date;
3. a date-formatted number past 9999-12-31: calamine cannot hand over its row (-> the row is
   ``unreadable_row``);
4. a number at or above 2**53: not a value on both sides; shown as calamine's float;
5. openpyxl leaves ``_xHHHH_`` escapes as written (but for some in shared strings): the text
   written is decoded by this test's own model, as Excel shows it.
"""

import random
from datetime import date, datetime
from pathlib import Path
from typing import Any, Optional

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_xlsx import Cell, b, e, empty, f, fs, inline, n, s, stream_into, write_raw_xlsx
from raw_xlsx import date as date_cell

from healthtech_etl import clean
from healthtech_etl.cells import NOT_A_VALUE, cell_text
from healthtech_etl.errors import InputFileError
from healthtech_etl.read import read_sheet
from healthtech_etl.schema import APPOINTMENT_COLUMNS, DOCTOR_COLUMNS

AS_OF = date(2025, 11, 1)
pytestmark = pytest.mark.filterwarnings("ignore:.*outside the limits for dates:UserWarning")
HOSTILE_CELLS = [
    s("104"), s(" 34 "), s("37X"), s(""), s("a_x0000_b"), s("a_x005F_x000D_b"), s("#VALUE!"), s("true"),
    s("10/21/2025"), s("Zoë\tÅ"), s("=1+1"), s("x" * 40_000), s("\u00a0"), inline("2025-10-21"),
    inline("Dr_x0009_Tab"), inline("  "),
    n(1), n(104), n(2**53 - 1), n(2**53), n(2**53 + 1), n(10**17), n(-5), n(0), n("104.0"), n(104.5), n(0.1),
    n("1E+20"), n(45950.5), n(123456789.123), n("1.5E-7"),
    date_cell(45950), date_cell("45950.395833333336"), date_cell(-18000), date_cell(0.5), date_cell(60),
    date_cell(0), date_cell(1), date_cell("2958465.9999"), date_cell(3000000), date_cell("45950.123456789"),
    b(True), b(False), e("#VALUE!"), e("#N/A"), e("#REF!"), f(None), f(12), f("1.25"), fs("ab"), empty(),
]


def unescape_model(text: str) -> str:
    """Excel's escapes, decoded left to right, each once: ``_x005F_`` is the underscore itself."""
    out, at = [], 0
    while at < len(text):
        chunk = text[at:at + 7]
        if len(chunk) == 7 and chunk.startswith("_x") and chunk.endswith("_") and all(
                ch in "0123456789abcdefABCDEF" for ch in chunk[2:6]):
            out.append(chr(int(chunk[2:6], 16)))
            at += 7
        else:
            out.append(text[at])
            at += 1
    return "".join(out)


def unreadable(cell: Optional[Cell]) -> bool:
    return cell is not None and cell.kind == "date" and float(cell.value) >= 2958466


def expected(cell: Optional[Cell], theirs: Any) -> Optional[str]:
    """What our reader must give for a cell openpyxl read as ``theirs`` (the accepted differences)."""
    if cell is not None and cell.kind == "e":
        return None  # 1
    if cell is not None and cell.kind == "date" and float(cell.value) < 1:
        return NOT_A_VALUE  # 2
    if cell is not None and cell.kind in ("s", "inline", "fs"):
        return unescape_model(cell.value or "") or None  # 5
    if isinstance(theirs, str):
        return theirs or None
    text = cell_text(theirs)
    return NOT_A_VALUE if text is not None and text.startswith(NOT_A_VALUE) else text  # 4


def ours(value: Any) -> Optional[str]:
    text = cell_text(value)
    return NOT_A_VALUE if text is not None and text.startswith(NOT_A_VALUE) else text


def compare(path: Path, columns: tuple, body: list, header_row: int, first_column: int) -> Any:
    oracle = openpyxl.load_workbook(path, data_only=True).active
    if all(expected(cell, oracle.cell(header_row + 1 + offset, first_column + k + 1).value) is None
           and not unreadable(cell) for offset, row in enumerate(body) for k, cell in enumerate(row or [])):
        with pytest.raises(InputFileError, match="has a header but no data rows"):
            read_sheet(path, columns)
        return None
    sheet = read_sheet(path, columns)
    by_row = dict(zip(sheet.frame["source_row"], sheet.frame.itertuples(index=False)))
    for offset, cells in enumerate(body):
        row = header_row + 1 + offset
        cells = list(cells or []) + [None] * len(columns)
        if any(unreadable(cell) for cell in cells):  # 3
            assert row in sheet.unreadable
            continue
        wanted = [expected(cells[k], oracle.cell(row, first_column + k + 1).value) for k in range(len(columns))]
        if all(value is None for value in wanted):
            assert row not in by_row  # a blank row
            continue
        got = [ours(value) for value in list(by_row[row])[: len(columns)]]
        assert got == wanted, f"row {row}"
    return sheet


def test_hostile_cells_in_every_column(tmp_path):
    for columns in (DOCTOR_COLUMNS, APPOINTMENT_COLUMNS):
        body = []
        for index, cell in enumerate(HOSTILE_CELLS):
            body.append([cell if k == index % len(columns) else n(index + 1) for k in range(len(columns))])
            body.append([cell] * len(columns))
        path = write_raw_xlsx(tmp_path / f"{columns[0]}.xlsx", [[s(c) for c in columns], *body])
        sheet = compare(path, columns, body, 1, 0)
        cleaner = clean.clean_doctors if columns == DOCTOR_COLUMNS else \
            lambda frame, lost: clean.clean_appointments(frame, [1, 2, 104], AS_OF, unreadable=lost)
        result = cleaner(sheet.frame, sheet.unreadable)
        assert not any(NOT_A_VALUE in str(value) for value in result.rejected.values.ravel())


cells = st.one_of(st.none(), st.sampled_from(HOSTILE_CELLS), st.integers(1, 300).map(n),
                  st.sampled_from(["confirmed", "Cancelled", "Dr. A", "10/22/2025"]).map(s))


@st.composite
def workbooks(draw: Any) -> tuple:
    columns = draw(st.sampled_from([DOCTOR_COLUMNS, APPOINTMENT_COLUMNS]))
    body = draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns)), min_size=1, max_size=8))
    titles = draw(st.lists(st.one_of(st.none(), st.just([s("Export")])), max_size=3))
    return (columns, body, titles, draw(st.integers(1, 3)), draw(st.integers(0, 2)),
            draw(st.booleans()), draw(st.randoms(use_true_random=False)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(workbooks())
def test_random_workbooks_read_as_the_oracle_reads_them(tmp_path, book):
    """Random hostile cells, title rows, offsets, and rows written in a shuffled order."""
    columns, body, titles, first_row, first_column, shuffle, rng = book
    if titles and not any(titles):
        titles = []
    path = write_raw_xlsx(tmp_path / "h.xlsx", [*titles, [s(c) for c in columns], *body],
                          first_row=first_row, first_column=first_column)
    if shuffle:
        shuffle_rows(path, rng)
    compare(path, columns, body, first_row + len(titles), first_column)


def shuffle_rows(path: Path, rng: random.Random) -> None:
    import re
    import zipfile

    with zipfile.ZipFile(path) as archive:
        xml = archive.read("xl/worksheets/sheet1.xml")
    rows = re.findall(rb"<row .*?</row>", xml)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    stream_into(path, "xl/worksheets/sheet1.xml", b"".join(rows), [b"".join(shuffled)])


@pytest.mark.parametrize("shuffle", [False, True])
def test_the_project_sample_reads_as_the_oracle_reads_it(tmp_path, shuffle):
    from healthtech_etl.sample import write_sample_workbooks

    _, appointments = write_sample_workbooks(tmp_path, rows=2000)
    if shuffle:
        shuffle_rows(appointments, random.Random(7))
    sheet = read_sheet(appointments, APPOINTMENT_COLUMNS)
    oracle = openpyxl.load_workbook(appointments, data_only=True).active
    assert len(sheet.frame) == oracle.max_row - 1
    for row in sheet.frame.itertuples(index=False):
        theirs = [oracle.cell(row.source_row, k + 1).value for k in range(len(APPOINTMENT_COLUMNS))]
        want = [expected(None, value) for value in theirs]
        if isinstance(theirs[3], datetime) and theirs[3].year < 1900:
            want[3] = NOT_A_VALUE  # accepted difference 2: a date cell before 1900 reads as a time
        assert [ours(value) for value in row[:5]] == want, row.source_row
