import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthtech_etl.clean import parse_ids


def parse(values):
    result = parse_ids(pd.Series(values, dtype=object))
    return list(zip(result["value"], result["missing"], result["invalid"]))


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("104", 104),
        ("104.0", 104),
        ("104.00", 104),
        (" 34 ", 34),
        ("\t7\n", 7),
        ("+5", 5),
        ("007", 7),
    ],
)
def test_numeric_text_is_accepted(cell, expected):
    assert parse([cell]) == [(expected, False, False)]


@pytest.mark.parametrize("cell", ["37X", "Dr 200", "104.5", "1e3", "-5", "0", "0.0", "abc", "1 2", "12,5", "true",
                                  "2025-10-21 00:00:00", "9999999999999999999"])
def test_junk_is_invalid_never_guessed(cell):
    assert parse([cell]) == [(0, False, True)]


@pytest.mark.parametrize("cell", [None, "", "   "])
def test_empty_is_missing(cell):
    assert parse([cell]) == [(0, True, False)]


def test_repeated_values_map_back_to_every_row():
    assert [v for v, _, _ in parse(["5", None, "5", "x", " 6 ", "5"])] == [5, 0, 5, 0, 6, 5]


@given(st.integers(min_value=1, max_value=10**17), st.sampled_from(["{}", "{}.0", " {} ", "{}.000", "0{}"]))
def test_any_positive_integer_rendering_round_trips(number, template):
    assert parse([template.format(number)]) == [(number, False, False)]


@given(st.text(alphabet="0123456789 .abcXD-+e", min_size=1, max_size=12))
def test_letters_never_yield_an_id(text):
    value, missing, invalid = parse([text])[0]
    if any(ch.isalpha() for ch in text):
        assert (value, missing) == (0, False) and invalid
    assert missing or invalid or value > 0


def test_ids_beyond_float_precision_stay_exact_next_to_junk():
    big = 2**53 + 1
    assert parse([str(big), "x", f" {big + 2}.0 ", "123456789012345678"]) == [
        (big, False, False), (0, False, True), (big + 2, False, False), (123456789012345678, False, False)]


def test_number_cells_are_ids_only_when_whole_and_below_2_to_53():
    # calamine hands over numbers as floats: a whole one below 2**53 is the id, the same as its text.
    assert parse([104.0, "104", 2.0**53 - 1, 2.0**53, 2.0**60, 104.5, 0.0, -3.0, float("inf")]) == [
        (104, False, False), (104, False, False), (2**53 - 1, False, False), (0, False, True),
        (0, False, True), (0, False, True), (0, False, True), (0, False, True), (0, False, True)]


@given(st.lists(st.one_of(st.integers(1, 2**53 - 1), st.floats(allow_nan=False)), min_size=1, max_size=20))
def test_a_number_cell_reads_as_its_whole_text_would(numbers):
    cells = [float(number) for number in numbers]
    as_text = [str(int(number)) if float(number).is_integer() and abs(number) < 2**53 else "x" for number in cells]
    assert parse(cells) == parse(as_text)
