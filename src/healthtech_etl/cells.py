"""What a cell read by python-calamine (:mod:`.read`) is worth as text, decided once per distinct
value of a column (README "Data rules"): text as written (``_xHHHH_`` escapes decoded), a whole
number below 2**53 as its digits, other numbers as ``repr``, a date as ``YYYY-MM-DD HH:MM:SS``,
empty or error cells None. A boolean, a time, a duration or a whole number from 2**53 on (a double
cannot hold it exactly) is *not a value*: its text with :data:`NOT_A_VALUE` in front, which every
rule rejects (rejections show it without the mark).
"""

import datetime as dt
import re
import warnings
from functools import cached_property
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

NOT_A_VALUE = "\uffff"
EXACT_INTEGER_LIMIT = 2**53
# Longest cell Excel itself can hold: anything longer did not come from Excel and is rejected.
MAX_CELL_CHARS = 32_767
CONTROL_CHARACTERS = "control_characters_removed"
# Removed from text before it is judged: C0 controls but tab, newline and carriage return (which
# count as whitespace), DEL, lone surrogates (not encodable) and the non-characters U+FFFE/U+FFFF.
_CONTROL_PATTERN = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]"
_CONTROL = re.compile(_CONTROL_PATTERN)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff\ufffe\uffff]")
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def cell_text(value: Any) -> Optional[str]:
    """One cell's text (see the module docstring)."""
    kind = value.__class__
    if value is None:
        return None
    if kind is str:
        return (_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), value) if "_x" in value else value) or None
    if kind is float or kind is int:
        if value != value:
            return None
        if float(value).is_integer():
            return str(int(value)) if abs(value) < EXACT_INTEGER_LIMIT else NOT_A_VALUE + repr(value)
        return repr(value)
    if kind is bool:
        return NOT_A_VALUE + ("TRUE" if value else "FALSE")
    if kind is dt.datetime:
        text = f"{value.year:04d}-{value:%m-%d %H:%M:%S}"
        return f"{text}.{value.microsecond:06d}" if value.microsecond else text
    if kind is dt.date:
        return f"{value.year:04d}-{value:%m-%d} 00:00:00"
    return NOT_A_VALUE + str(value)  # a time of day, a duration


def texts(values: np.ndarray) -> np.ndarray:
    """:func:`cell_text` of each of ``values`` (object array); whole numbers converted in bulk."""
    out = np.empty(len(values), dtype=object)
    number = numbers(values)
    plain = (np.abs(number) < EXACT_INTEGER_LIMIT) & (number == np.floor(number))
    out[plain] = list(map(str, number[plain].astype("int64").tolist()))
    out[~plain] = [cell_text(value) for value in values[~plain].tolist()]
    return out


def numbers(values: np.ndarray) -> np.ndarray:
    """Each value as float64 where it is a number cell, NaN elsewhere."""
    floats = np.fromiter(map(float.__instancecheck__, values), dtype=bool, count=len(values))
    number = np.full(len(values), np.nan)
    number[floats] = values[floats].astype("float64")
    return number


class Grouped:
    """A column's cells grouped by value: ``uniques[codes]`` are its cells (numbers first, then the
    rest; None, the empty cell, last); per unique value ``number`` (float64, NaN if not a number
    cell) and ``distinct``, its text. The object arrays are made on first use only."""

    def __init__(self, codes: np.ndarray, number_uniques: np.ndarray, other_uniques: np.ndarray) -> None:
        self.codes, self._others = codes, other_uniques
        self.number = np.concatenate([np.asarray(number_uniques, dtype="float64"), np.full(len(other_uniques), np.nan)])

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The unique values at ``positions`` (object array)."""
        count = len(self.number) - len(self._others)
        out = np.empty(len(positions), dtype=object)
        is_number = positions < count
        out[is_number] = self.number[positions[is_number]].tolist()
        out[~is_number] = self._others[positions[~is_number] - count]
        return out

    @cached_property
    def uniques(self) -> np.ndarray:
        return self.at(np.arange(len(self.number)))

    @cached_property
    def distinct(self) -> pd.Series:
        return pd.Series(texts(self.uniques), dtype=object)


def column_codes(cells: pd.Series) -> Grouped:
    """Group ``cells`` (calamine cells) by value: equal cells (same value, same type) share a
    code. Numbers are grouped as float64 (fast, and apart from booleans, which hash like 1.0)."""
    values = cells.to_numpy(dtype=object)
    floats = np.fromiter(map(float.__instancecheck__, values), dtype=bool, count=len(values))
    number_codes, number_uniques = pd.factorize(values[floats].astype("float64"))
    with warnings.catch_warnings():  # pandas 1.4/1.5 give this warning for an all-empty object column
        warnings.filterwarnings("ignore", message=".*will not infer numeric dtypes.*", category=FutureWarning)
        other_codes, other_uniques = pd.factorize(values[~floats])  # an empty cell: code -1
    codes = np.empty(len(values), dtype="int64")
    codes[floats] = number_codes
    codes[~floats] = np.where(other_codes < 0, -1, other_codes + len(number_uniques))
    others = np.asarray(other_uniques, dtype=object)
    if (codes < 0).any():  # empty cells: a value of their own, the last
        codes = np.where(codes < 0, len(number_uniques) + len(others), codes)
        others = np.append(others, None)
    return Grouped(codes, number_uniques, others)


def map_distinct(cells: pd.Series, parse: Callable[["Grouped"], Any]) -> pd.DataFrame:
    """Apply a vectorised ``parse`` to the distinct values of ``cells`` only, then map back."""
    grouped = column_codes(cells)
    return pd.DataFrame({name: np.asarray(values)[grouped.codes] for name, values in dict(parse(grouped)).items()})


def scrub(values: pd.Series) -> dict[str, Any]:
    """Text hygiene of distinct texts: ``text`` (without :data:`_CONTROL_PATTERN`), ``not_value``
    (:data:`NOT_A_VALUE` first), ``too_long`` (over :data:`MAX_CELL_CHARS`), ``scrubbed``; only flagged ones touched."""
    size = len(values)
    flagged = flag_unusual(values)
    not_value, too_long, scrubbed = (np.zeros(size, dtype=bool) for _ in range(3))
    if not flagged.any():
        return {"text": values, "not_value": not_value, "too_long": too_long, "scrubbed": scrubbed}
    text = values.to_numpy(dtype=object).copy()
    for position in np.flatnonzero(flagged):
        value = text[position]
        if value.startswith(NOT_A_VALUE):
            not_value[position] = True
        elif len(value) > MAX_CELL_CHARS:
            too_long[position] = True
        else:
            text[position] = _CONTROL.sub("", value)
            scrubbed[position] = text[position] != value
    return {"text": pd.Series(text, index=values.index, dtype=object), "not_value": not_value,
            "too_long": too_long, "scrubbed": scrubbed}


def flag_unusual(values: pd.Series) -> np.ndarray:
    """Texts holding a control character, :data:`NOT_A_VALUE` or over the length limit (one search
    over all of them joined by newlines, which the pattern does not match)."""
    cells = values.to_numpy(dtype=object)
    flagged = np.zeros(len(cells), dtype=bool)
    is_text = np.fromiter(map(str.__instancecheck__, cells), dtype=bool, count=len(cells))
    text = cells[is_text].tolist()
    lengths = np.fromiter(map(len, text), dtype="int64", count=len(text))
    hit = lengths > MAX_CELL_CHARS
    joined = "\n".join(text)
    if _CONTROL.search(joined):
        starts = [found.start() for found in _CONTROL.finditer(joined)]
        hit[np.searchsorted(np.cumsum(lengths + 1), starts, side="right")] = True
    flagged[is_text] = hit
    return flagged


def raw_cells(cells: pd.Series) -> pd.Series:
    """Cells as rejections show them: text without the :data:`NOT_A_VALUE` mark (a boolean: ``TRUE``),
    NUL, lone surrogates or non-characters (PostgreSQL refuses NUL), at most :data:`MAX_CELL_CHARS`.
    Each a new object: a few of the sheet's own cells kept would hold on to the memory of all of them
    (Python returns memory to the system only in whole arenas)."""
    values = texts(cells.to_numpy(dtype=object))
    values[:] = [value if value is None else "".join((value, "")) for value in values.tolist()]
    text = pd.Series(values, index=cells.index, dtype=object)
    for position in np.flatnonzero(flag_unusual(text)):
        value = values[position]
        values[position] = _UNSTORABLE.sub("", value[1:] if value.startswith(NOT_A_VALUE) else value)[:MAX_CELL_CHARS]
    return pd.Series(values, index=cells.index, dtype=object)
