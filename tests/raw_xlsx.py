"""Write .xlsx workbooks as raw SpreadsheetML (zip + XML written here), so every cell's stored
type is exactly what the test says: shared or inline strings, numbers as written, booleans,
error values, date-styled numbers, formulas with or without a cached value. No library in
between decides anything."""

import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Cell:
    """One stored cell. ``kind``: ``s`` shared string, ``inline`` inline string, ``n`` number
    (``value`` written verbatim in ``<v>``), ``date`` number with a date style, ``b`` boolean
    (``"1"``/``"0"``), ``e`` error (``"#VALUE!"``), ``f`` formula (``formula``; ``value`` the
    cached number, or None for no cached value), ``fs`` formula with a cached string."""

    kind: str
    value: Optional[str]
    formula: str = "1+1"


def s(text: str) -> Cell:
    return Cell("s", text)


def inline(text: str) -> Cell:
    return Cell("inline", text)


def n(number: object) -> Cell:
    return Cell("n", str(number))


def empty() -> Cell:
    return Cell("empty", None)


def date(serial: object) -> Cell:
    return Cell("date", str(serial))


def b(flag: bool) -> Cell:
    return Cell("b", "1" if flag else "0")


def e(error: str) -> Cell:
    return Cell("e", error)


def f(cached: Optional[object], formula: str = "1+1") -> Cell:
    return Cell("f", None if cached is None else str(cached), formula)


def fs(cached: str, formula: str = "\"a\"&\"b\"") -> Cell:
    return Cell("fs", cached, formula)


def column_letters(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA ... 16383 -> XFD."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _text(value: str) -> str:
    """XML text of a string: kept verbatim, with ``xml:space`` for edge whitespace."""
    return escape(value)


def write_raw_xlsx(
    path: Path,
    rows: Sequence[Sequence[Optional[Cell]]],
    *,
    first_row: int = 1,
    first_column: int = 0,
    extra_cells: Sequence[tuple[str, Cell]] = (),
    merged: Sequence[str] = (),
    dimension: Optional[str] = None,
    sheet: str = "Sheet1",
    extra_sheets: Sequence[str] = (),
) -> Path:
    """Write ``rows`` (None = no cell) from spreadsheet row ``first_row`` and column index
    ``first_column``; ``extra_cells``: (``"XFD1048576"``, cell) written after the rows."""
    shared: dict[str, int] = {}
    lines = []
    by_row: dict[int, list[tuple[int, str, Cell]]] = {}
    for offset, cells in enumerate(rows):
        for position, cell in enumerate(cells or ()):
            if cell is not None:
                column = first_column + position
                by_row.setdefault(first_row + offset, []).append((column, column_letters(column), cell))
    for ref, cell in extra_cells:
        letters = "".join(ch for ch in ref if ch.isalpha())
        number = int(ref[len(letters):])
        by_row.setdefault(number, []).append((10**9, letters, cell))
    for number in sorted(by_row):
        parts = []
        for _, letters, cell in sorted(by_row[number], key=lambda item: item[0]):
            parts.append(_cell_xml(f"{letters}{number}", cell, shared))
        lines.append(f'<row r="{number}">{"".join(parts)}</row>')
    dim = f'<dimension ref="{dimension}"/>' if dimension else ""
    merge = (
        f'<mergeCells count="{len(merged)}">' + "".join(f'<mergeCell ref="{m}"/>' for m in merged) + "</mergeCells>"
        if merged else ""
    )
    sheet_xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        f'{dim}<sheetData>{"".join(lines)}</sheetData>{merge}</worksheet>'
    )
    strings = sorted(shared, key=shared.__getitem__)
    shared_xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{len(strings)}" '
        f'uniqueCount="{len(strings)}">'
        + "".join(f'<si><t xml:space="preserve">{_text(text)}</t></si>' for text in strings)
        + "</sst>"
    )
    names = [sheet, *extra_sheets]
    empty_sheet = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData/></worksheet>'
    )
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            + "".join(
                f'<Override PartName="/xl/worksheets/sheet{i + 1}.xml" '
                'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
                for i in range(len(names))
            )
            + '<Override PartName="/xl/styles.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>'
            + "".join(f'<sheet name="{escape(name)}" sheetId="{i + 1}" r:id="rId{i + 1}"/>'
                      for i, name in enumerate(names))
            + "</sheets></workbook>"
        ),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            + "".join(
                f'<Relationship Id="rId{i + 1}" '
                'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
                f'Target="worksheets/sheet{i + 1}.xml"/>'
                for i in range(len(names))
            )
            + f'<Relationship Id="rId{len(names) + 1}" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/>'
            f'<Relationship Id="rId{len(names) + 2}" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" '
            'Target="sharedStrings.xml"/></Relationships>'
        ),
        "xl/styles.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
            '<fills count="1"><fill><patternFill patternType="none"/></fill></fills>'
            '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
            '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
            '<xf numFmtId="22" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
            '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
            "</styleSheet>"
        ),
        "xl/sharedStrings.xml": shared_xml,
        "xl/worksheets/sheet1.xml": sheet_xml,
    }
    for i in range(1, len(names)):
        files[f"xl/worksheets/sheet{i + 1}.xml"] = empty_sheet
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text.encode("utf-8"))
    return path


def _cell_xml(ref: str, cell: Cell, shared: dict[str, int]) -> str:
    kind, value = cell.kind, cell.value
    if kind == "s":
        index = shared.setdefault(value or "", len(shared))
        return f'<c r="{ref}" t="s"><v>{index}</v></c>'
    if kind == "inline":
        return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{_text(value or "")}</t></is></c>'
    if kind == "empty":  # a formatted cell with no value
        return f'<c r="{ref}" s="1"/>'
    if kind == "n":
        return f'<c r="{ref}"><v>{value}</v></c>'
    if kind == "date":
        return f'<c r="{ref}" s="1"><v>{value}</v></c>'
    if kind == "b":
        return f'<c r="{ref}" t="b"><v>{value}</v></c>'
    if kind == "e":
        return f'<c r="{ref}" t="e"><v>{escape(value or "")}</v></c>'
    if kind == "f":
        cached = f"<v>{value}</v>" if value is not None else ""
        return f'<c r="{ref}"><f>{escape(cell.formula)}</f>{cached}</c>'
    if kind == "fs":
        return f'<c r="{ref}" t="str"><f>{escape(cell.formula)}</f><v>{_text(value or "")}</v></c>'
    raise ValueError(f"unknown cell kind {kind!r}")


def stream_into(path: Path, member: str, old: bytes, pieces: Iterable[bytes]) -> Path:
    """Rewrite the workbook at ``path`` with the raw XML ``old`` in ``member`` replaced by
    ``pieces`` (raw XML, written one at a time into the deflate stream: a 300 MB text costs no
    300 MB string). Every other member is copied unchanged."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            if name != member:
                archive.writestr(name, data)
                continue
            before, found, after = data.partition(old)
            assert found, f"{old!r} is not in {member}"
            with archive.open(name, "w", force_zip64=True) as stream:
                stream.write(before)
                for piece in pieces:
                    stream.write(piece)
                stream.write(after)
    return path
