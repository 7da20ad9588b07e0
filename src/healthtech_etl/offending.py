"""The offending values of a run, from its rejected rows: per entity and reason code, how many rows
and where, the column at fault with its most frequent values (each with its count and rows), for
out-of-range booking dates the range found against the window allowed (and a fill series such as
"one year per row"), for unknown doctors the ids the doctors file holds."""

from datetime import date, timedelta
from typing import Any, Optional

import numpy as np
import pandas as pd

from . import schema
from .dates import parse_booking_dates, window
from .redact import safe_text
from .schema import REASON_SEPARATOR, REASONS, SOURCE_ROW

TOP_VALUES = 5
_EPOCH = date(1970, 1, 1)
_YEAR_STEP = np.iinfo("int64").min  # a pair of rows one calendar year apart
_COLUMN_OF = {
    **{code: column for column in schema.DOCTOR_COLUMNS + schema.APPOINTMENT_COLUMNS
       for code in (schema.missing(column), schema.invalid(column))},
    schema.UNKNOWN_DOCTOR: "doctor_id", schema.DUPLICATE_DOCTOR_ID: "doctor_id",
    schema.DUPLICATE_BOOKING_ID: "booking_id", schema.BOOKING_DATE_OUT_OF_RANGE: "booking_date",
}


def reason_column(code: str) -> Optional[str]:
    """The column a reason code is about (None: ``duplicate_row``, ``unreadable_row``)."""
    return _COLUMN_OF.get(code)


def offending_values(rejected: dict[str, pd.DataFrame], known_doctors: np.ndarray, basis: str, as_of: date,
                     horizon_days: int, day_first: bool = False) -> dict[str, dict[str, Any]]:
    """``{entity: {code: {count, column, first_row, last_row, top_values[, date_range][, known_doctor_ids]}}}``,
    the codes of an entity most frequent first. ``known_doctors``: the ids ``unknown_doctor`` was judged
    against; ``basis``: where they came from (``doctors_in_file`` or ``doctors_in_file_and_database``)."""
    known = np.asarray(known_doctors, dtype="int64")
    known_ids = {"count": int(len(known)), "min": str(known.min()) if len(known) else None,
                 "max": str(known.max()) if len(known) else None, "basis": basis}
    allowed = [_iso(day) for day in window(as_of, horizon_days)]
    out: dict[str, dict[str, Any]] = {}
    for entity, frame in rejected.items():
        found = {}
        for code, mask in _masks(frame).items():
            rows = frame[SOURCE_ROW].to_numpy(dtype="int64")[mask]
            column = reason_column(code)
            values = frame[column].to_numpy(dtype=object)[mask] if column in frame else None
            info = {"count": int(mask.sum()), "column": column, "first_row": int(rows.min()),
                    "last_row": int(rows.max()), "top_values": [] if values is None else _top(values, rows)}
            if code == schema.BOOKING_DATE_OUT_OF_RANGE and values is not None:
                info["date_range"] = _date_range(values, rows, allowed, day_first)
            if code == schema.UNKNOWN_DOCTOR:
                info["known_doctor_ids"] = known_ids
            found[code] = info
        out[entity] = dict(sorted(found.items(), key=lambda item: -item[1]["count"]))
    return out


def _masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Reason code -> the rejected rows carrying it (each distinct ``;``-joined list split once)."""
    if frame.empty:
        return {}
    codes, combos = pd.factorize(frame[REASONS].astype(object).fillna(""))
    combos_of: dict[str, list[int]] = {}
    for index, combo in enumerate(combos):
        for code in str(combo).split(REASON_SEPARATOR):
            if code:
                combos_of.setdefault(code, []).append(index)
    order = {code: position for position, code in enumerate(schema.REASON_CODES)}
    return {code: np.isin(codes, combos_of[code]) for code in sorted(combos_of, key=lambda c: order.get(c, len(order)))}


def _top(values: np.ndarray, rows: np.ndarray) -> list[dict[str, Any]]:
    """The most frequent non-empty values (ties: the one seen first), with their count and rows."""
    present = (pd.Series(values, dtype=object).str.strip().fillna("") != "").to_numpy(dtype=bool)
    if not present.any():
        return []
    grouped = pd.DataFrame({"value": values[present], "row": rows[present]}).groupby("value", sort=False)["row"]
    stats = grouped.agg(["size", "min", "max"]).sort_values(["size", "min"], ascending=[False, True])
    return [{"value": safe_text(value), "count": int(size), "first_row": int(low), "last_row": int(high)}
            for value, (size, low, high) in zip(stats.index[:TOP_VALUES], stats.to_numpy()[:TOP_VALUES])]


def _iso(days: int) -> str:
    return (_EPOCH + timedelta(days=int(days))).isoformat()


def _date_range(values: np.ndarray, rows: np.ndarray, allowed: list[str], day_first: bool) -> dict[str, Any]:
    """The dates found (the rejected cells parsed again, as the cleaner did) against the window."""
    parsed = parse_booking_dates(pd.Series(values, dtype=object), day_first)
    ok = parsed["parsed"].to_numpy(dtype=bool)
    days = parsed["days"].to_numpy(dtype="int64")[ok]
    found = {"found_min": _iso(days.min()) if len(days) else None,
             "found_max": _iso(days.max()) if len(days) else None,
             "allowed_min": allowed[0], "allowed_max": allowed[1]}
    pattern = _fill_series(rows[ok], days)
    return {**found, "pattern": pattern} if pattern else found


def _fill_series(rows: np.ndarray, days: np.ndarray) -> Optional[str]:
    """The longest run of 3+ consecutive rows whose date moves by the same step (an Excel fill
    handle dragged too far): ``one year per row, rows 453-782``."""
    if len(rows) < 3:
        return None
    order = np.argsort(rows, kind="stable")
    rows, dates = rows[order], days[order].astype("datetime64[D]")
    years, months = dates.astype("datetime64[Y]"), dates.astype("datetime64[M]")
    day_of_month = (dates - months).astype("int64")
    month_of_year = (months - years.astype("datetime64[M]")).astype("int64")
    year_step = (np.diff(years.astype("int64")) == 1) & (np.diff(month_of_year) == 0) & (np.diff(day_of_month) == 0)
    step = np.where(year_step, _YEAR_STEP, np.diff(days[order]))
    linked = (np.diff(rows) == 1) & (step != 0)
    run = np.cumsum(~linked | np.r_[True, step[1:] != step[:-1]])
    lengths = np.bincount(run, weights=linked)
    best = int(lengths.argmax())
    if lengths[best] < 2:
        return None
    pairs = np.flatnonzero((run == best) & linked)
    first, last, size = rows[pairs[0]], rows[pairs[-1] + 1], int(step[pairs[0]])
    if size == _YEAR_STEP:
        text = "one year per row"
    else:
        text = f"{abs(size):,} day{'s' if abs(size) != 1 else ''} {'later' if size > 0 else 'earlier'} per row"
    return f"{text}, rows {first}-{last}"
