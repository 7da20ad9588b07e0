"""The extractor's vectorised steps against their plain reference: the trace check on distinct
values (Arrow RE2 plus a pattern for plain decimals vs. a regex and ``_is_trace`` per value),
and corrections applied to a still-grouped column (vs. setting cells in a list)."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtech_etl import _arrow, extract
from healthtech_etl.extract import _EncodedText, _is_trace, _recode, _trace_positions

SAMPLES = [
    "16404.0", "16404.50", "0.0001", "0.00001", "0.1", "-0.0", "0.0", "-12.0", "12.5", "1e5", "1E+20", "1.5E-7",
    "123456789012345.0", "123456789012345.6", "1234567890123456.0", "999999999999999.9", "0.30000000000000004",
    "012.5", "104", "9007199254740993", "2025-10-21 00:00:00", "1850-05-04 00:00:00", "12:30:00", "#N/A", "#VALUE!",
    "true", "FALSE", "+5", "Dr. A", "", ".5", "-.5", "5.", "1.0e3", "00.1",
]
decimals = st.builds(
    lambda sign, whole, fraction: f"{sign}{whole}.{fraction}",
    st.sampled_from(["", "-", "+"]),
    st.text("0123456789", min_size=0, max_size=17),
    st.text("0123456789", min_size=1, max_size=17),
)
values = st.one_of(st.sampled_from(SAMPLES), decimals, st.floats(allow_nan=False, allow_infinity=False).map(repr))


def reference_positions(distinct: np.ndarray) -> list:
    return [i for i, value in enumerate(distinct)
            if value is not None and re.match(extract._TRACE, value) and _is_trace(value)]


@settings(max_examples=300)
@given(st.lists(values, max_size=40, unique=True), st.booleans())
def test_trace_positions_match_the_reference(texts, with_none):
    distinct = np.array(texts + ([None] if with_none else []), dtype=object)
    expected = reference_positions(distinct)
    assert _trace_positions(distinct).tolist() == expected
    if _arrow.pa is not None:  # the Arrow array the reader keeps (without the trailing None)
        arrow = _arrow.pa.array(texts, type=_arrow.pa.string())
        assert _trace_positions(distinct, arrow).tolist() == expected


def test_trace_positions_without_arrow_match_too(monkeypatch):
    distinct = np.array(SAMPLES + [None], dtype=object)
    expected = reference_positions(distinct)
    monkeypatch.setattr(_arrow, "pc", None)
    assert _trace_positions(distinct).tolist() == expected
    assert expected, "the samples hold traces"


def test_plain_decimals_are_exactly_their_repr():
    """What the vectorised shortcut assumes, on the boundary cases."""
    pattern = re.compile(extract._PLAIN_DECIMAL)
    for text in ["16404.0", "0.0001", "99999999999999.0", "9999999999999.99", "-12.5", "0.12345678901234"]:
        assert pattern.match(text) and len(text) <= extract._PLAIN_DECIMAL_CHARS  # taken by the shortcut
        assert repr(float(text)) == text
    for text in ["0.00001", "16404.50", "012.5", "0.0", "1.0e3"]:
        assert not pattern.match(text)


# --- corrections on a grouped column -----------------------------------------------------------

pool = ["a", "b", "c", "-5", "#N/A", None, "x y"]


@st.composite
def grouped_columns(draw):
    distinct = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), unique=True, min_size=1, max_size=5))
    with_none = draw(st.booleans())
    values = np.array(distinct + ([None] if with_none else []), dtype=object)
    size = draw(st.integers(0, 30))
    codes = np.array(draw(st.lists(st.integers(0, max(len(values) - 1, 0)), min_size=size, max_size=size)),
                     dtype=np.int32) if len(values) else np.zeros(0, dtype=np.int32)
    positions = draw(st.lists(st.integers(0, max(size - 1, 0)), unique=True, max_size=size)) if size else []
    texts = draw(st.lists(st.sampled_from(pool), min_size=len(positions), max_size=len(positions)))
    return _EncodedText(codes, values), positions, texts


@settings(max_examples=300)
@given(grouped_columns())
def test_recoding_a_grouped_column_equals_setting_its_cells(case):
    column, positions, texts = case
    expected = list(column.cells())
    for position, text in zip(positions, texts):
        expected[position] = text
    recoded = _recode(column, np.array(positions, dtype=np.int64), texts)
    assert list(recoded.cells()) == expected
    distinct = list(recoded.distinct)
    assert None not in distinct[:-1]  # None only last (the blank-row check relies on it)
    strings = [value for value in distinct if value is not None]
    assert len(strings) == len(set(strings))  # still distinct (the duplicate check relies on it)


@pytest.mark.parametrize("reader", [r for r in extract.available_readers() if r == "fastexcel"])
def test_a_corrected_column_keeps_its_grouping_through_the_reader(tmp_path, reader):
    """A date before 1900 (corrected from the XML) no longer ungroups the whole column."""
    from raw_xlsx import date, n, s, write_raw_xlsx

    rows = [[s(c) for c in ("booking_id", "patient_id", "doctor_id", "booking_date", "status")]]
    rows += [[n(i), n(7), n(1), date(45950 if i % 3 else -18000), s("confirmed")] for i in range(1, 40)]
    path = write_raw_xlsx(tmp_path / "a.xlsx", rows)
    data = extract.read_sheet(path, ("booking_id", "patient_id", "doctor_id", "booking_date", "status"),
                              reader=reader)
    assert "booking_date" in data.encoded
    codes, distinct = data.encoded["booking_date"]
    assert list(distinct[codes]) == data.frame["booking_date"].tolist()
    reference = extract.read_sheet(path, ("booking_id", "patient_id", "doctor_id", "booking_date", "status"),
                                   reader="openpyxl")
    assert data.frame["booking_date"].tolist() == reference.frame["booking_date"].tolist()
    assert len(set(data.frame["booking_date"])) == 2 and "1850" in min(data.frame["booking_date"])
