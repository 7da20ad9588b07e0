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


# --- the fast writer agrees with pandas' writer (the reference) byte for byte ------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from healthtech_etl.csv_export import frame_csv_reference  # noqa: E402

text_cells = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["=1+1", "+", "-2", "@x", "\tcmd", "\rx",
                                                                         'a"b', "a,b", "a\nb", "'", " =x", "Zoë"]))
object_columns = st.one_of(
    st.lists(text_cells, min_size=4, max_size=4),
    st.lists(st.one_of(st.none(), st.integers(-10**18, 10**18)), min_size=4, max_size=4),
    st.lists(st.one_of(text_cells, st.integers(-5, 5)), min_size=4, max_size=4),
    st.lists(st.one_of(st.none(), st.just(float("nan")), st.floats(allow_nan=False)), min_size=4, max_size=4),
    st.lists(st.one_of(st.none(), st.booleans()), min_size=4, max_size=4),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(object_columns, min_size=1, max_size=4), st.lists(st.integers(-10**18, 10**18), min_size=4, max_size=4),
       st.sampled_from(["x", "=f", "a,b", "n"]))
def test_the_fast_frame_writer_writes_what_pandas_writes(tmp_path_factory, columns, integers, header):
    directory = tmp_path_factory.mktemp("csv")
    frame = pd.DataFrame({f"{header}{index}": pd.Series(values, dtype=object) for index, values in enumerate(columns)})
    frame["n"] = pd.Series(integers, dtype="int64")
    fast = write_frame_csv(directory / "fast.csv", frame).read_bytes()
    assert fast == frame_csv_reference(directory / "reference.csv", frame).read_bytes()


def test_the_rejected_rows_shape_takes_the_fast_path():
    from healthtech_etl.csv_export import _text_columns

    frame = pd.DataFrame({"entity": ["appointments"] * 2, "row_number": pd.Series([2, 3], dtype="int64"),
                          "record_id": pd.Series([9, None], dtype=object), "raw": ["=x", None]})
    assert _text_columns(frame) == [["appointments"] * 2, ["2", "3"], ["9", ""], ["'=x", ""]]
