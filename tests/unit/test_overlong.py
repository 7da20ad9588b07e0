"""Overlong text is cut before any reader allocates it, and nothing downstream can tell: with the
cut and without it (``overlong.ENABLED``), every reader gives the same cells (an overlong one:
still too long, the same stored raw cell) and the cleaner the same valid rows, reasons, raw
cells and counts. Workbooks are raw SpreadsheetML written here (tests/raw_xlsx.py), the overlong
text spliced into their XML."""

import contextlib
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import pytest
from raw_xlsx import Cell, fs, inline, n, s, stream_into, write_raw_xlsx

from healthtech_etl import clean, overlong
from healthtech_etl.extract import available_readers, read_sheet

READERS = available_readers()
DOCTORS = clean.DOCTOR_COLUMNS
STRINGS = "xl/sharedStrings.xml"
SHEET = "xl/worksheets/sheet1.xml"
LIMIT = clean.MAX_CELL_CHARS


def doctors(path: Path, names: list[Cell], splice: Optional[dict[str, tuple[str, bytes]]] = None) -> Path:
    """A doctors sheet, one row per name cell. ``splice``: placeholder text -> (member, raw XML
    of the element holding it: ``<si>``, ``<is>`` or ``<v>``) put in its place."""
    rows = [[s("doctor_id"), s("name"), s("specialty")]]
    rows += [[n(index + 1), name, s("Cardiology")] for index, name in enumerate(names)]
    write_raw_xlsx(path, rows)
    for placeholder, (member, xml) in (splice or {}).items():
        text = f'<t xml:space="preserve">{placeholder}</t>'.encode()
        old = {STRINGS: b"<si>" + text + b"</si>", SHEET: b"<is>" + text + b"</is>"}.get(member)
        if xml.startswith(b"<v>"):
            member, old = SHEET, f"<v>{placeholder}</v>".encode()
        stream_into(path, member, old, [xml])
    return path


def shared(xml: bytes) -> tuple[str, bytes]:
    return STRINGS, xml


def inline_string(xml: bytes) -> tuple[str, bytes]:
    return SHEET, xml


def read(path: Path, reader: str, monkeypatch: pytest.MonkeyPatch, enabled: bool) -> Any:
    with monkeypatch.context() as patch:
        patch.setattr(overlong, "ENABLED", enabled)
        return read_sheet(path, DOCTORS, reader=reader, entity="doctors")


def cleaned(frame: pd.DataFrame) -> dict:
    out = clean.clean_doctors(frame)
    return {
        "valid": out.valid.values.tolist(),
        "rejected": out.rejected.astype(object).where(out.rejected.notna(), None).values.tolist(),
        "stats": out.stats,
    }


def verdict(cell: Optional[str]) -> tuple:
    """What the cleaner makes of one cell: flags and the stored raw cell."""
    values = pd.Series([cell], dtype=object)
    hygiene = clean.scrub(values)
    return (bool(hygiene["not_value"][0]), bool(hygiene["too_long"][0]), clean.raw_cells(values)[0])


@contextlib.contextmanager
def overlong_warnings() -> Iterator[list]:
    """The messages overlong.py logs meanwhile, taken from its own logger (caplog sees only what
    propagates to the root, and an earlier test may have configured the package's logging)."""
    messages: list = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("healthtech_etl.overlong")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def assert_same_with_and_without_the_cut(path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> list:
    """Every reader, cut vs. not cut: the same cells (an overlong one judged the same, and
    bounded when cut) and the same cleaning. Returns the first reader's rejections."""
    first = None
    for reader in READERS:
        original = read(path, reader, monkeypatch, enabled=False)
        with overlong_warnings() as warnings:
            defused = read(path, reader, monkeypatch, enabled=True)
        assert len(warnings) == 1 and "cut" in warnings[0], (reader, warnings)
        assert list(original.frame.columns) == list(defused.frame.columns)
        assert original.frame["source_row"].tolist() == defused.frame["source_row"].tolist()
        assert (original.blank_rows, original.skipped_header_rows, original.extra_columns) == (
            defused.blank_rows, defused.skipped_header_rows, defused.extra_columns)
        overlong_cells = 0
        for column in DOCTORS:
            for before, after in zip(original.frame[column], defused.frame[column]):
                if before is not None and len(before) > LIMIT:
                    overlong_cells += 1
                    assert len(after) < 3 * overlong.KEEP, (reader, column)  # really cut
                    assert verdict(after) == verdict(before), (reader, column)
                else:
                    assert after == before, (reader, column)
        assert overlong_cells, reader
        assert cleaned(defused.frame) == cleaned(original.frame), reader
        first = first or cleaned(original.frame)["rejected"]
    return first


A = b"A" * 40_000
CASES = {
    "plain": shared(b"<si><t>" + A + b"</t></si>"),
    "rich, cut in the first run": shared(
        b'<si><r><rPr><b/><sz val="11"/></rPr><t>' + b"B" * 40_000 + b'</t></r><r><t xml:space="preserve">'
        + b"C" * 20_000 + b'</t></r><rPh sb="0" eb="1"><t>ph</t></rPh><phoneticPr fontId="1"/></si>'),
    "rich, cut in the second run": shared(
        b"<si><r><t>" + b"D" * 30_000 + b"</t></r><r><rPr><i/></rPr><t>" + b"E" * 30_000
        + b"</t></r><r><t>" + b"F" * 30_000 + b"</t></r></si>"),
    "control-character escapes past the limit": shared(
        b"<si><t>" + b"a" * 30_000 + b"_x0001_" * 5_000 + b"\tb" * 5_000 + b"</t></si>"),
    "NUL escapes past the limit": shared(
        b"<si><t>" + b"a" * 30_000 + b"_x0000__x007F_" * 3_000 + b"b" * 10_000 + b"</t></si>"),
    "escapes at the cut": shared(b"<si><t>" + b"a" * 32_765 + b"_x0041_" * 9 + b"b" * 100 + b"</t></si>"),
    "x005F escapes at the cut": shared(
        b"<si><t>" + b"a" * 32_760 + b"_x005F_x0041_x005F_" * 4 + b"c" * 100 + b"</t></si>"),
    "an escape across two runs at the cut": shared(  # openpyxl joins the runs, calamine does not
        b"<si><r><t>" + b"a" * 32_760 + b"_x004</t></r><r><t>1_x0042_" + b"b" * 100 + b"</t></r></si>"),
    "entities at the cut": shared(
        b"<si><t>" + b"a" * 32_766 + b"&amp;&lt;&#233;&#x1F600;&quot;" * 3 + b"b" * 100 + b"</t></si>"),
    "multi-byte characters": shared(b"<si><t>" + "é漢😀".encode() * 15_000 + b"</t></si>"),
    "a CDATA section at the cut": shared(
        b"<si><t>" + b"a" * 30_000 + b"<![CDATA[<b>&]]" + b"x" * 10_000 + b"]]>" + b"z" * 10 + b"</t></si>"),
    "a comment in the text": shared(b"<si><t>" + b"a" * 20_000 + b"<!-- <si> -->" + b"b" * 20_000 + b"</t></si>"),
    "an inline string in a bomb-like sheet": inline_string(b"<is><t>" + b"Z" * 300_000 + b"</t></is>"),
    "a rich inline string": inline_string(
        b"<is><r><t>" + b"Y" * 150_000 + b"</t></r><r><rPr><b/></rPr><t>" + b"X" * 150_000 + b"</t></r></is>"),
}


@pytest.mark.parametrize("case", CASES)
def test_overlong_text_is_cut_and_nothing_downstream_changes(tmp_path, monkeypatch, caplog, case):
    member, xml = CASES[case]
    name = inline("P") if member == SHEET else s("P")
    path = doctors(tmp_path / "d.xlsx", [s("Dr Ok"), name, s("Dr Two")], {"P": (member, xml)})
    rejected = assert_same_with_and_without_the_cut(path, monkeypatch, caplog)
    assert [(row[1], row[3]) for row in rejected] == [(3, "invalid_name")]
    assert len(rejected[0][5]) == LIMIT  # the stored raw cell: its first 32,767 storable characters


def test_formula_string_result_is_cut_too(tmp_path, monkeypatch, caplog):
    path = doctors(tmp_path / "d.xlsx", [s("Dr Ok"), fs("P")], {"P": (SHEET, b"<v>" + b"W" * 300_000 + b"</v>")})
    rejected = assert_same_with_and_without_the_cut(path, monkeypatch, caplog)
    assert [(row[1], row[3]) for row in rejected] == [(3, "invalid_name")]


def test_equal_overlong_cells_stay_duplicates_and_different_ones_do_not(tmp_path, monkeypatch, caplog):
    same = b"<is><t>" + A + b"</t></is>"
    path = doctors(tmp_path / "d.xlsx", [inline("P1"), inline("P2"), inline("P3"), inline("P4")], {
        "P1": inline_string(same), "P2": inline_string(same),
        "P3": inline_string(b"<is><t>" + A + b"1</t></is>"), "P4": inline_string(b"<is><t>" + A + b"2</t></is>"),
    })
    # Rows 2-5 hold doctor ids 1-4: make rows 2/3 and 4/5 equal but for the name.
    stream_into(path, SHEET, b'<c r="A3"><v>2</v></c>', [b'<c r="A3"><v>1</v></c>'])
    stream_into(path, SHEET, b'<c r="A5"><v>4</v></c>', [b'<c r="A5"><v>3</v></c>'])
    rejected = assert_same_with_and_without_the_cut(path, monkeypatch, caplog)
    assert [(row[1], row[3]) for row in rejected] == [
        (2, "invalid_name"), (3, "invalid_name;duplicate_row"), (4, "invalid_name"), (5, "invalid_name")]


def test_only_overlong_elements_are_found_at_the_limit(tmp_path):
    names = [s(f"Dr {index:05d}") for index in range(3000)]
    path = doctors(tmp_path / "d.xlsx", [s("P1"), *names, s("P2"), s("P3"), s("P4")], {
        "P1": shared(b"<si><t>" + b"a" * (LIMIT + 2) + b"</t></si>"),  # a cut keeps all but one
        "P2": shared(b"<si><t>" + b"b" * (LIMIT + 1) + b"</t></si>"),  # a cut would keep it all
        "P3": shared(b"<si><t>" + b"&amp;" * 8_000 + b"</t></si>"),  # 40,000 bytes, 8,000 characters
        "P4": shared(b"<si><t>" + b"c" * 50_000 + b"</t></si>"),  # the last element of the part
    })
    [part] = overlong.find_overlong(path, SHEET)
    with zipfile.ZipFile(path) as archive:
        xml = archive.read(STRINGS)
    assert part.member == STRINGS
    assert [xml[start:start + 9] for start in part.starts] == [b"<si><t>aa", b"<si><t>cc"]


def test_a_long_shared_strings_part_without_overlong_text_is_read_directly(tmp_path, caplog):
    names = [s(f"Dr {index:05d} {'x' * 20}") for index in range(3000)]
    path = doctors(tmp_path / "d.xlsx", [*names, s("P1"), s("P2")], {
        "P1": shared(b"<si><t>" + b"&amp;" * 8_000 + b"</t></si>"),  # long XML, not long text
        "P2": shared(b"<si><t>" + "漢".encode() * LIMIT + b"</t></si>"),  # 98,301 bytes, at the limit
    })
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo(STRINGS).file_size > 10 * LIMIT
    assert overlong.find_overlong(path, SHEET) == []
    with overlong.Defuser() as defuser:
        assert defuser.defuse(path, SHEET) == path
        assert defuser.directory is None  # no copy, no temporary directory
    with overlong_warnings() as warnings:
        frame = read_sheet(path, DOCTORS, reader=READERS[-1]).frame
    assert warnings == []
    assert frame["name"].iloc[-1] == "漢" * LIMIT


def test_the_copy_keeps_the_name_and_is_removed_after_the_read(tmp_path):
    path = doctors(tmp_path / "doctors.xlsx", [s("P")], {"P": shared(b"<si><t>" + A + b"</t></si>")})
    with overlong.Defuser() as defuser:
        copy = defuser.defuse(path, SHEET)
        assert copy != path and copy.name == path.name and copy.is_file()
        with zipfile.ZipFile(path) as original, zipfile.ZipFile(copy) as cut:
            assert original.namelist() == cut.namelist()
            for name in original.namelist():
                if name != STRINGS:
                    assert cut.read(name) == original.read(name)
            assert len(cut.read(STRINGS)) < len(original.read(STRINGS)) - 7_000
    assert not copy.exists() and not copy.parent.exists()


def test_the_copy_is_removed_when_the_read_fails(tmp_path, monkeypatch):
    path = doctors(tmp_path / "doctors.xlsx", [s("P")], {"P": shared(b"<si><t>" + A + b"</t></si>")})
    made = []
    real = overlong.tempfile.mkdtemp

    def mkdtemp(**kwargs: Any) -> str:
        made.append(real(**kwargs))
        return made[-1]

    monkeypatch.setattr(overlong.tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(Exception, match="mandatory column"):
        read_sheet(path, ("doctor_id", "name", "no_such_column"), reader=READERS[0])
    assert made and not Path(made[0]).exists()


def test_sheet_xml_is_searched_only_when_it_deflates_like_a_bomb(tmp_path, monkeypatch, caplog):
    import random

    letters = random.Random(7)
    text = "".join(letters.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(40_000))
    plain = doctors(tmp_path / "plain.xlsx", [inline("P")], {"P": inline_string(f"<is><t>{text}</t></is>".encode())})
    assert overlong.find_overlong(plain, SHEET) == []  # as large in the file as in memory: left as is
    bomb = doctors(tmp_path / "bomb.xlsx", [inline("P")], {"P": inline_string(b"<is><t>" + b"q" * 40_000 + b"</t></is>")})
    assert [part.member for part in overlong.find_overlong(bomb, SHEET)] == [SHEET]
    for reader in READERS:
        assert cleaned(read(plain, reader, monkeypatch, True).frame)["stats"]["reason:invalid_name"] == 1


def test_a_prefixed_namespace_is_followed(tmp_path, monkeypatch, caplog):
    path = doctors(tmp_path / "d.xlsx", [s("P")])
    with zipfile.ZipFile(path) as archive:
        xml = archive.read(STRINGS)
    ns = b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    prefixed = xml.replace(ns, ns.replace(b"xmlns=", b"xmlns:x=")).replace(b"<sst", b"<x:sst") \
        .replace(b"</sst", b"</x:sst").replace(b"<si>", b"<x:si>").replace(b"</si>", b"</x:si>") \
        .replace(b"<t ", b"<x:t ").replace(b"</t>", b"</x:t>")
    stream_into(path, STRINGS, xml, [prefixed.replace(b">P<", b">" + A + b"<")])
    rejected = assert_same_with_and_without_the_cut(path, monkeypatch, caplog)
    assert [row[3] for row in rejected] == ["invalid_name"]


def test_the_limit_is_the_cleaners():
    assert overlong.MAX_CHARS == clean.MAX_CELL_CHARS


def test_a_flood_of_removed_characters_is_cut_past_the_window(tmp_path, monkeypatch):
    """The one inexact case (documented): fewer than KEEP characters survive hygiene in the
    first WINDOW characters (here NULs, from escapes). The text is still cut soon after the
    window, and is still too long; only its stored raw cell differs."""
    xml = b"<si><t>" + b"_x0000_" * 300_000 + b"b" * 40_000 + b"</t></si>"
    path = doctors(tmp_path / "d.xlsx", [s("P")], {"P": shared(xml)})
    for reader in READERS:
        original = read(path, reader, monkeypatch, enabled=False).frame["name"].iloc[0]
        cell = read(path, reader, monkeypatch, enabled=True).frame["name"].iloc[0]
        assert len(original) == 340_000 and overlong.WINDOW // 7 < len(cell) < 300_000
        assert verdict(cell)[:2] == verdict(original)[:2] == (False, True)
        assert verdict(original)[2] == "b" * LIMIT
        assert verdict(cell)[2].startswith("~") and len(verdict(cell)[2]) == 33  # only the digest survives
