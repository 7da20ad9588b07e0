"""flag_unusual searches all texts at once; a plain per-text check is its oracle."""

import re

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtech_etl.cells import _CONTROL_PATTERN, MAX_CELL_CHARS, NOT_A_VALUE, flag_unusual

_CHARACTERS = st.sampled_from(["a", "é", " ", "\t", "\n", "\r", "\x00", "\x07", "\x1f", "\x7f", "\ud800", "\ufffe",
                               NOT_A_VALUE, "😀", "_x0007_"])
_TEXTS = st.lists(_CHARACTERS, max_size=6).map("".join)
_CELLS = st.one_of(st.none(), _TEXTS, st.floats(allow_nan=False), st.booleans(),
                   st.integers(min_value=0, max_value=3).map(lambda extra: "a" * (MAX_CELL_CHARS - 1 + extra)))


def expected(cells: list) -> list:
    return [isinstance(cell, str) and (re.search(_CONTROL_PATTERN, cell) is not None or len(cell) > MAX_CELL_CHARS)
            for cell in cells]


@settings(max_examples=300)
@given(st.lists(_CELLS, max_size=30))
def test_flags_agree_with_checking_each_text(cells):
    assert flag_unusual(pd.Series(cells, dtype=object)).tolist() == expected(cells)


def test_a_control_character_in_the_last_text_and_none_elsewhere():
    cells = ["plain", None, 4.0, "tab\tand newline\n are fine", "bell\x07"]
    assert flag_unusual(pd.Series(cells, dtype=object)).tolist() == [False, False, False, False, True]
