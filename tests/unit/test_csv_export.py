import csv

import pandas as pd

from healthtech_etl.csv_export import escape_cell, write_csv, write_frame_csv


def test_formula_like_cells_are_escaped():
    assert escape_cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert escape_cell("+1") == "'+1"
    assert escape_cell("-2") == "'-2"
    assert escape_cell("@SUM(A1)") == "'@SUM(A1)"
    assert escape_cell("\tcmd") == "'\tcmd"
    assert escape_cell("Dr. Ana") == "Dr. Ana"
    assert escape_cell(-2) == -2  # numbers are data, not formulas
    assert escape_cell(None) is None


def test_write_csv_round_trip(tmp_path):
    path = write_csv(tmp_path / "out" / "q.csv", ["name", "n"], [["=cmd|' /C calc'!A0", 1], ["Zoë", None]])
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["name", "n"], ["'=cmd|' /C calc'!A0", "1"], ["Zoë", ""]]


def test_write_frame_csv_escapes_text_columns_only(tmp_path):
    frame = pd.DataFrame({"raw": ["=1+1", "ok", None, "@x"], "n": [-1, 2, 3, 4], "empty": [None] * 4})
    path = write_frame_csv(tmp_path / "f.csv", frame)
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert back["raw"].tolist() == ["'=1+1", "ok", "", "'@x"]
    assert back["n"].tolist() == ["-1", "2", "3", "4"]
    assert frame["raw"].tolist()[0] == "=1+1"  # the caller's frame is untouched
