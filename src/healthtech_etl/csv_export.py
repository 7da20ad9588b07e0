"""CSV files that are safe to open in a spreadsheet.

A cell starting with ``=``, ``+``, ``-``, ``@`` (or tab / carriage return) would be run as a
formula by Excel or LibreOffice (CSV injection). Such text cells get a leading apostrophe.
"""

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported by whoever has a frame: the CLI starts without it
    import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """``'=1+1'`` -> ``"'=1+1"``; numbers, dates and other text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def escape_frame(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Vectorised :func:`escape_cell` over the text columns of a frame (returns a copy)."""
    escaped = frame.copy()
    for column in escaped.columns:
        if escaped[column].dtype == object:
            values = escaped[column]
            try:
                # Non-text cells give NaN here, i.e. are never escaped.
                risky = values.str.startswith(FORMULA_PREFIXES, na=False).astype(bool)
            except AttributeError:  # no text at all in this column
                continue
            if risky.any():
                escaped.loc[risky, column] = "'" + values[risky]
    return escaped


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write ``rows`` under a header of ``columns``, formula-like cells escaped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([escape_cell(name) for name in columns])
        for row in rows:
            writer.writerow([escape_cell(value) for value in row])
    return path


def write_frame_csv(path: Path, frame: "pd.DataFrame") -> Path:
    """Write a DataFrame as CSV, formula-like cells escaped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Our own file object: pandas 1.4 (the Glue runtime), given a path, loses a write error
    # (a full disk left an empty file and no error); flushing and closing this one raises it.
    with path.open("w", newline="", encoding="utf-8") as handle:
        escape_frame(frame).to_csv(handle, index=False)
    return path
