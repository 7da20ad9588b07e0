"""The column profile of a run - per entity and column, over every row read: rows, empty cells,
distinct values, min/max and the most frequent values - and the contract's column checks. Cheap at
a million rows: ids and booking dates are counted as int64 (the loaded rows' typed values and the
rejected rows' cells parsed again by the same rules; a cell that is no id or date counts as its text),
text columns from the cells as read (few distinct values)."""

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from .cells import raw_cells
from .clean import CleanResult, parse_ids
from .contract import DATE_COLUMNS, ID_COLUMNS, SHEET_COLUMNS, Check
from .dates import micros_to_datetime64, parse_booking_dates, to_micros
from .redact import safe_text
from .schema import BOOKING_DATE_OUT_OF_RANGE, SOURCE_ROW, invalid

TOP_VALUES = 5
_MICROS_PER_DAY = 86_400_000_000
_EPOCH = date(1970, 1, 1).toordinal()
_VALID_NAMES = {("appointments", "booking_id"): "id", ("doctors", "doctor_id"): "id"}  # column -> valid frame's


@dataclass
class _Values:
    """One column of the rows read: ``typed`` (int64 ids or microseconds; empty for a text column),
    ``texts`` (other non-empty values -> count) and ``nulls`` (empty cells)."""

    kind: str  # "id", "date" or "text"
    typed: np.ndarray
    texts: pd.Series
    nulls: int

    def render(self, values: np.ndarray, date_only: bool = False) -> list[str]:
        if self.kind != "date":
            return [str(value) for value in values.tolist()]
        if date_only:
            return [str(day) for day in micros_to_datetime64(values).astype("datetime64[D]")]
        return [text.replace("T", " ") for text in np.datetime_as_string(micros_to_datetime64(values), unit="s")]


def profile_and_checks(raw: dict[str, pd.DataFrame], results: dict[str, CleanResult], checks: tuple[Check, ...],
                       day_first: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``report["profile"]`` and ``report["checks"]`` (``raw``: each entity's cells as read)."""
    positions = {entity: _positions(raw[entity], result) for entity, result in results.items()}
    values = {(entity, column): _values(entity, column, raw[entity], result, positions[entity], day_first)
              for entity, result in results.items() for column in SHEET_COLUMNS[entity]}
    profile = {entity: {column: _profile(values[(entity, column)], len(raw[entity]))
                        for column in SHEET_COLUMNS[entity]} for entity in results}
    return profile, [_check(check, values[(check.entity, check.column)], results[check.entity]) for check in checks]


def _positions(raw: pd.DataFrame, result: CleanResult) -> np.ndarray:
    """Where the rejected rows are in ``raw`` (its rows are in sheet order: a binary search)."""
    rows, wanted = raw[SOURCE_ROW].to_numpy(dtype="int64"), result.rejected[SOURCE_ROW].to_numpy(dtype="int64")
    if bool(np.all(rows[1:] > rows[:-1])):
        return np.searchsorted(rows, wanted)
    return pd.Index(rows).get_indexer(wanted)


def _values(entity: str, column: str, raw: pd.DataFrame, result: CleanResult, rejected: np.ndarray,
            day_first: bool) -> _Values:
    if column not in ID_COLUMNS + DATE_COLUMNS:
        counts = raw[column].value_counts(dropna=False)
        text = raw_cells(pd.Series(counts.index.to_numpy(dtype=object), dtype=object)).str.strip()
        present = text.fillna("").to_numpy(dtype=object) != ""
        texts = pd.Series(counts.to_numpy()[present], index=text.to_numpy(dtype=object)[present], dtype="int64")
        return _Values("text", np.zeros(0, dtype="int64"), texts.groupby(level=0, sort=False).sum(),
                       int(counts.to_numpy()[~present].sum()))
    valid = result.valid[_VALID_NAMES.get((entity, column), column)].to_numpy(dtype="int64")
    cells = result.rejected[column]  # their text; ids are parsed from the cells as read (numbers: no text)
    if column in ID_COLUMNS:
        parsed = parse_ids(raw[column].iloc[rejected].reset_index(drop=True))
        empty, ok = parsed["missing"].to_numpy(dtype=bool), ~(parsed["missing"] | parsed["invalid"]).to_numpy(dtype=bool)
        typed = parsed["value"].to_numpy(dtype="int64")[ok]
    else:
        parsed = parse_booking_dates(cells, day_first)
        empty, ok = parsed["missing"].to_numpy(dtype=bool), parsed["parsed"].to_numpy(dtype=bool)
        typed = to_micros(*(parsed[key].to_numpy(dtype="int64")[ok] for key in ("days", "seconds", "micros")))
    others = cells[~ok & ~empty].astype(object).value_counts()
    return _Values("id" if column in ID_COLUMNS else "date", np.concatenate([valid, typed]), others, int(empty.sum()))


def _counts(typed: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Distinct values and their counts (and whether the values come sorted): ids in a dense range
    (the usual case) by ``bincount``, without hashing a million values; others by ``factorize``."""
    if len(typed) and int(typed.max()) - int(typed.min()) < 4 * len(typed) + 1024:
        low = int(typed.min())
        every = np.bincount(typed - low)
        seen = np.flatnonzero(every)
        return seen + low, every[seen], True
    codes, uniques = pd.factorize(typed)
    return np.asarray(uniques, dtype="int64"), np.bincount(codes, minlength=len(uniques)), False


def _top(uniques: np.ndarray, counts: np.ndarray, ordered: bool) -> np.ndarray:
    """Positions of the :data:`TOP_VALUES` most frequent values, ties: the smaller value first (no full sort)."""
    pick = np.arange(len(counts))
    if len(counts) > TOP_VALUES:
        from_top = np.cumsum(np.bincount(counts)[::-1])  # values seen at least max, max - 1, ... times
        kth = int(counts.max()) - int(np.searchsorted(from_top, TOP_VALUES))
        above, ties = np.flatnonzero(counts > kth), np.flatnonzero(counts == kth)
        need = TOP_VALUES - len(above)
        if len(ties) > need:
            ties = ties[:need] if ordered else ties[np.argpartition(uniques[ties], need - 1)[:need]]
        pick = np.concatenate([above, ties])
    return pick[np.lexsort((uniques[pick], -counts[pick]))]


def _profile(values: _Values, rows: int) -> dict[str, Any]:
    uniques, counts, ordered = _counts(values.typed)
    pick = _top(uniques, counts, ordered)
    texts = values.texts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    top = list(zip(values.render(uniques[pick]), counts[pick].tolist()))
    top += list(zip(texts.index[:TOP_VALUES].tolist(), texts.to_numpy()[:TOP_VALUES].tolist()))
    top.sort(key=lambda item: -item[1])
    if len(values.typed):
        low, high = values.render(np.array([values.typed.min(), values.typed.max()]))
    else:
        low, high = (min(texts.index), max(texts.index)) if len(texts) else (None, None)
    return {"rows": rows, "nulls": values.nulls, "distinct": len(uniques) + len(texts),
            "min": None if low is None else safe_text(low), "max": None if high is None else safe_text(high),
            "top_values": [{"value": safe_text(value), "count": int(count)} for value, count in top[:TOP_VALUES]]}


def _check(check: Check, values: _Values, result: CleanResult) -> dict[str, Any]:
    rows = int(result.stats["read"])
    out: dict[str, Any] = {"entity": check.entity, "column": check.column, "check": check.kind,
                           "expected": check.expected()}
    if check.kind == "range":
        low, high = check.low, check.high
        if values.kind == "date":
            low, high = (low.toordinal() - _EPOCH) * _MICROS_PER_DAY, (high.toordinal() - _EPOCH + 1) * _MICROS_PER_DAY - 1
        typed = values.typed
        outside = int(((typed < low) | (typed > high)).sum())
        found = (" .. ".join(values.render(np.array([typed.min(), typed.max()]), date_only=True))
                 if len(typed) else "no values")
        where = "outside" if outside else "within"
        out.update(value=f"{found}; {outside:,} outside", status=check.level if outside else "ok",
                   detail=f"{f'{outside:,}' if outside else 'all'} of {len(typed):,} {check.column} values lie {where} "
                          f"{check.expected()}.")
        return out
    codes = (invalid(check.column),) + ((BOOKING_DATE_OUT_OF_RANGE,) if check.column in DATE_COLUMNS else ())
    bad = values.nulls + sum(int(result.stats.get(f"reason:{code}", 0)) for code in codes)
    share = round(100.0 * (rows - bad) / rows, 2) if rows else 100.0
    out.update(value=f"{share:.2f} %", status=check.level if share < check.share else "ok",
               detail=f"{bad:,} of {rows:,} {check.column} cells are empty or invalid.")
    return out
