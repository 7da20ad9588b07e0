"""CSV files that are safe to open in a spreadsheet: a text cell starting with ``=``, ``+``,
``-``, ``@``, tab or carriage return (a formula to Excel: CSV injection) gets a leading apostrophe."""

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pandas is imported by whoever has a frame: the CLI starts without it
    import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """``'=1+1'`` -> ``"'=1+1"``; numbers, dates and other text unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) else value


def escape_frame(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Vectorised :func:`escape_cell` over the text columns of a frame (returns a copy)."""
    escaped = frame.copy()
    for column in escaped.columns:
        if escaped[column].dtype == object:
            values = escaped[column]
            try:  # non-text cells give NaN here, i.e. are never escaped
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
    """Write a DataFrame as CSV, formula-like cells escaped: the bytes of :func:`frame_csv_reference`,
    faster for text / None / integer columns (others go through pandas)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = _text_columns(frame)
    if columns is None:
        return frame_csv_reference(path, frame)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator=os.linesep)  # pandas' dialect
        writer.writerow([str(name) for name in frame.columns])
        writer.writerows(zip(*columns))
    return path


def frame_csv_reference(path: Path, frame: "pd.DataFrame") -> Path:
    """The plain path :func:`write_frame_csv` must agree with: pandas' writer."""
    # Our own file object: pandas 1.4 (the Glue runtime), given a path, loses a write error
    # (a full disk left an empty file and no error); flushing and closing this one raises it.
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        escape_frame(frame).to_csv(handle, index=False)
    return Path(path)


def _text_columns(frame: "pd.DataFrame") -> "Optional[list[list[str]]]":
    """Each column's cells as the text pandas writes (formula-like text escaped), or None unless every
    column is int64 or object of str / None / NaN / int."""
    columns = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype == "int64":
            columns.append([str(value) for value in values.tolist()])
            continue
        if values.dtype != object:
            return None
        cells = values.tolist()
        kinds = {type(value) for value in cells}
        if not kinds <= {str, int, float, type(None)}:
            return None
        if float in kinds and any(value == value for value in cells if type(value) is float):
            return None  # a real float: pandas' own formatting
        columns.append(["" if value is None or type(value) is float
                        else ("'" + value if value.startswith(FORMULA_PREFIXES) else value) if type(value) is str
                        else str(value) for value in cells])
    return columns
