"""Pure cleaning rules, no I/O: calamine cells in, typed valid rows + explained rejections out. Every
rule judges a cell's text (:mod:`.cells` renders it), vectorised: values that repeat (patient ids,
dates, statuses) are judged once per *distinct* value and mapped back, which keeps a 1M-row export
fast. Runs on pandas 1.4+ (AWS Glue) and 2.x."""

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from functools import reduce
from typing import Any, Optional

import numpy as np
import pandas as pd

from . import schema
from .cells import (
    CONTROL_CHARACTERS,
    EXACT_INTEGER_LIMIT,
    Grouped,
    column_codes,
    map_distinct,
    raw_cells,
    scrub,
    texts,
)
from .dates import DEFAULT_HORIZON_DAYS, _parse_dates, to_micros, validate_window, window
from .dates import MAX_HORIZON_DAYS as MAX_HORIZON_DAYS  # re-exported: the date rules are part of clean
from .dates import parse_booking_dates as parse_booking_dates
from .schema import APPOINTMENT_COLUMNS, DOCTOR_COLUMNS, ENTITY, REASONS, RECORD_ID, SOURCE_ROW
from .schema import STATUSES as STATUSES

# ASCII digits only: other Unicode digits ('١٢٣', '１２３') are never read as an id.
_ID = re.compile(r"^\+?0*([0-9]{1,18})(?:\.0*)?$")


@dataclass
class CleanResult:
    """``valid``: typed rows ready to load; ``rejected``: per rejected record ``entity``, ``source_row``,
    ``record_id`` (or None), ``reasons`` (``;``-joined) and its raw cells; ``stats``: counts for metrics."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    stats: dict[str, int] = field(default_factory=dict)
    unknown_statuses: dict[str, int] = field(default_factory=dict)


def parse_ids(cells: pd.Series) -> pd.DataFrame:
    """Identifiers: whole numbers, and text holding one after trimming (``'104.0'``, ``' 34 '``,
    ``'+0104'``); ``'37X'``, ``'Dr 200'``, ``'104.5'``, ``'0'`` are invalid. Columns ``value``
    (int64, 0 where not valid), ``missing``, ``invalid`` and ``scrubbed``."""
    return map_distinct(cells, _parse_distinct_ids)


def _parse_distinct_ids(grouped: Grouped) -> dict[str, np.ndarray]:
    """A number cell is an id when it is a whole number from 1 to 2**53 - 1; a text cell when
    it holds one (:data:`_ID`; the common ``"104"`` read without a regex)."""
    number = grouped.number
    size = len(number)
    is_number = ~np.isnan(number)
    values = np.zeros(size, dtype="int64")
    valid = is_number & (number >= 1) & (number < EXACT_INTEGER_LIMIT) & (number == np.floor(number))
    values[valid] = number[valid].astype("int64")
    invalid = is_number & ~valid
    missing, scrubbed = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
    rest = np.flatnonzero(~is_number)
    if len(rest):
        plain = np.fromiter(
            (int(text) if text.__class__ is str and text.isdigit() and text.isascii() and len(text) < 19
             and text[0] != "0" else -1 for text in grouped.at(rest)), "int64", len(rest))
        values[rest] = np.maximum(plain, 0)
        rest = rest[plain < 0]
        hygiene = scrub(pd.Series(texts(grouped.at(rest)), dtype=object))
        bad = hygiene["not_value"] | hygiene["too_long"]
        trimmed = [text.strip() if text is not None else "" for text in hygiene["text"].tolist()]
        empty = np.array([not text for text in trimmed], dtype=bool)
        # At most 18 ASCII digits: exact in int64 (never through float, which rounds above 2**53).
        ids = np.array([int(found.group(1)) if (found := _ID.match(text)) else 0 for text in trimmed], dtype="int64")
        values[rest] = np.where(bad, 0, ids)
        missing[rest] = empty & ~bad
        invalid[rest] = (ids == 0) & ~empty | bad
        scrubbed[rest] = hygiene["scrubbed"]
    return {"value": values, "missing": missing, "invalid": invalid, "scrubbed": scrubbed}


def normalize_status(cells: pd.Series) -> pd.Series:
    """Trim, lower-case, drop non-letters; ``confirm*`` -> confirmed, ``cancel*`` (incl.
    ``canceled``) -> cancelled; anything else (empty included) -> unknown."""
    return map_distinct(cells, lambda grouped: {"status": _statuses(grouped.distinct)})["status"]


def _statuses(distinct: pd.Series) -> np.ndarray:
    letters = distinct.fillna("").str.lower().str.replace(r"[^a-z]", "", regex=True)
    return np.where(letters.str.startswith("confirm"), "confirmed",
                    np.where(letters.str.startswith("cancel"), "cancelled", "unknown")).astype(object)


def clean_text(cells: pd.Series) -> pd.Series:
    """Trim, collapse inner whitespace, Unicode NFC (accents kept), control characters removed; empty,
    error cells, booleans and over-long cells -> None (:func:`clean_text_parts` has the flags)."""
    return clean_text_parts(cells)["text"]


def clean_text_parts(cells: pd.Series) -> pd.DataFrame:
    """:func:`clean_text` with, per cell, ``invalid`` (error cell, boolean, inexact number or
    over :data:`MAX_CELL_CHARS` characters) and ``scrubbed`` (a control character removed)."""
    return map_distinct(cells, lambda grouped: _parse_distinct_text(grouped.distinct))


def _parse_distinct_text(distinct: pd.Series) -> dict[str, Any]:
    hygiene = scrub(distinct)
    bad = hygiene["not_value"] | hygiene["too_long"]
    text = hygiene["text"].where(~bad, None).fillna("").map(lambda value: unicodedata.normalize("NFC", value))
    text = text.str.replace(r"\s+", " ", regex=True).str.strip()
    return {"text": text.where(text != "", None).astype(object), "invalid": bad, "scrubbed": hygiene["scrubbed"]}


def title_case(cells: pd.Series) -> pd.Series:
    """Specialty: cleaned text, title-cased; empty -> None."""
    return _title(clean_text(cells))


def _title(text: pd.Series) -> pd.Series:
    return text.where(text.isna(), text.str.title())


class _Reasons:
    """Boolean masks of reason codes, in the order they were added."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.masks: list[tuple[str, np.ndarray]] = []

    def add(self, code: str, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.masks.append((code, mask))

    def any(self) -> np.ndarray:
        return reduce(np.logical_or, [mask for _, mask in self.masks], np.zeros(self.size, dtype=bool))

    def joined(self, rows: np.ndarray) -> np.ndarray:
        """``;``-joined codes for the row positions ``rows``."""
        out = np.full(len(rows), "", dtype=object)
        for code, mask in self.masks:
            hit = mask[rows]
            out[hit] = out[hit] + np.where(out[hit] == "", code, ";" + code)
        return out

    def counts(self) -> dict[str, int]:
        """``reason:<code>`` -> rows carrying it, for the stats."""
        return {f"reason:{code}": int(mask.sum()) for code, mask in self.masks}


def _duplicate_codes(codes: list[np.ndarray]) -> np.ndarray:
    """Rows repeating an earlier row in every column, from per-column factorize codes (no second
    hashing of the cells). Only rows whose cell in the column with the most distinct values occurs
    more than once can repeat one: the rest (an id column: almost all) are set aside first."""
    size = len(codes[0]) if codes else 0
    duplicated = np.zeros(size, dtype=bool)
    if not size:
        return duplicated
    widest = max(codes, key=lambda column: int(column.max()))
    shifted = widest.astype("int64") + 1  # codes are >= -1
    candidates = np.flatnonzero(np.bincount(shifted)[shifted] > 1)
    key = np.zeros(len(candidates), dtype="int64")
    span = 1
    for column in codes:
        column = column[candidates]
        width = int(column.max()) + 2 if len(column) else 1
        if span * width >= 2**62:  # renumber the rows' keys densely before they overflow
            key, uniques = pd.factorize(key)
            span = len(uniques)
        key = key * width + (column.astype("int64") + 1)
        span *= width
    duplicated[candidates] = pd.Series(key).duplicated(keep="first").to_numpy(dtype=bool)
    return duplicated


def _rejected_frame(raw: pd.DataFrame, columns: tuple[str, ...], entity: str, found: _Reasons,
                    record_ids: np.ndarray, id_ok: np.ndarray) -> pd.DataFrame:
    rows = np.flatnonzero(found.any())
    rejected = raw.iloc[rows][[SOURCE_ROW, *columns]].reset_index(drop=True)
    for column in columns:
        rejected[column] = raw_cells(rejected[column])
    rejected.insert(0, ENTITY, entity)
    rejected.insert(2, RECORD_ID, pd.Series(record_ids[rows], dtype="int64").astype(object).where(id_ok[rows], None))
    rejected.insert(3, REASONS, found.joined(rows))
    return rejected


def _unreadable(raw: pd.DataFrame, found: _Reasons, unreadable: Optional[list[int]]) -> np.ndarray:
    """Rows calamine could not hand over (see read._rows): ``unreadable_row`` and nothing else."""
    mask = np.isin(raw[SOURCE_ROW].to_numpy(), np.asarray(unreadable or [], dtype="int64"))
    found.add(schema.UNREADABLE_ROW, mask)
    return mask


def clean_doctors(raw: pd.DataFrame, unreadable: Optional[list[int]] = None) -> CleanResult:
    """Doctors sheet (calamine cells + source_row) -> valid doctors and rejections."""
    found = _Reasons(len(raw))
    lost = _unreadable(raw, found, unreadable)
    ids = parse_ids(raw["doctor_id"])
    found.add(schema.missing("doctor_id"), ids["missing"].to_numpy() & ~lost)
    found.add(schema.invalid("doctor_id"), ids["invalid"].to_numpy())
    name_parts = clean_text_parts(raw["name"])
    names = name_parts["text"]
    name_invalid = name_parts["invalid"].to_numpy(dtype=bool)
    found.add(schema.INVALID_NAME, name_invalid)
    found.add(schema.MISSING_NAME, names.isna().to_numpy() & ~name_invalid & ~lost)
    specialty_parts = clean_text_parts(raw["specialty"])
    found.add(schema.invalid("specialty"), specialty_parts["invalid"].to_numpy(dtype=bool))
    found.add(schema.DUPLICATE_ROW, _duplicate_codes([column_codes(raw[c]).codes for c in DOCTOR_COLUMNS]) & ~lost)
    id_values = ids["value"].to_numpy()
    _reject_repeated_ids(found, id_values, schema.DUPLICATE_DOCTOR_ID)
    keep = ~found.any()
    valid = pd.DataFrame({"id": id_values[keep], "name": names.to_numpy()[keep],
                          "specialty": _title(specialty_parts["text"]).to_numpy()[keep],
                          SOURCE_ROW: raw[SOURCE_ROW].to_numpy()[keep]})
    id_ok = ~(ids["missing"].to_numpy() | ids["invalid"].to_numpy())
    scrubbed = sum(int(part["scrubbed"].to_numpy(dtype=bool).sum()) for part in (ids, name_parts, specialty_parts))
    stats = {"read": len(raw), CONTROL_CHARACTERS: scrubbed, **found.counts()}
    return CleanResult(valid, _rejected_frame(raw, DOCTOR_COLUMNS, "doctors", found, id_values, id_ok), stats)


def _reject_repeated_ids(found: _Reasons, id_values: np.ndarray, code: str) -> None:
    """Rows passing every other rule but sharing an id with an earlier such row."""
    clean = ~found.any()
    repeated = np.zeros(len(id_values), dtype=bool)
    repeated[clean] = pd.Series(id_values[clean]).duplicated(keep="first").to_numpy()
    found.add(code, repeated)


def clean_appointments(raw: pd.DataFrame, known_doctor_ids: np.ndarray, as_of: date, day_first: bool = False,
                       horizon_days: int = DEFAULT_HORIZON_DAYS, unreadable: Optional[list[int]] = None) -> CleanResult:
    """Appointments sheet (calamine cells + source_row) -> valid appointments and rejections.
    ``booking_date`` of the valid rows: int64 microseconds since 1970-01-01 (:func:`to_micros`).
    ``known_doctor_ids``: ids of the doctors being loaded (referential integrity)."""
    validate_window(as_of, horizon_days)
    found = _Reasons(len(raw))
    lost = _unreadable(raw, found, unreadable)
    # Each column's cells grouped once: the codes serve the rules and the duplicate check.
    grouped = {column: column_codes(raw[column]) for column in APPOINTMENT_COLUMNS}
    judged = {column: _judge(column, grouped[column], day_first) for column in APPOINTMENT_COLUMNS}
    for column in ("booking_id", "patient_id", "doctor_id"):
        found.add(schema.missing(column), judged[column]["missing"] & ~lost)
        found.add(schema.invalid(column), judged[column]["invalid"])
    dates = judged["booking_date"]
    found.add(schema.MISSING_BOOKING_DATE, dates["missing"] & ~lost)
    found.add(schema.INVALID_BOOKING_DATE, dates["invalid"])
    low, high = window(as_of, horizon_days)
    out_of_range = dates["parsed"] & ((dates["days"] < low) | (dates["days"] > high))
    found.add(schema.BOOKING_DATE_OUT_OF_RANGE, out_of_range)
    duplicate_rows = _duplicate_codes([grouped[column].codes for column in APPOINTMENT_COLUMNS]) & ~lost
    found.add(schema.DUPLICATE_ROW, duplicate_rows)
    doctor = judged["doctor_id"]
    doctor_ok = ~(doctor["missing"] | doctor["invalid"])
    doctor_known = doctor_ok & np.isin(doctor["value"], np.asarray(known_doctor_ids, dtype="int64"))
    found.add(schema.UNKNOWN_DOCTOR, doctor_ok & ~doctor_known)
    _reject_repeated_ids(found, judged["booking_id"]["value"], schema.DUPLICATE_BOOKING_ID)
    status = judged["status"]
    found.add(schema.invalid("status"), status["not_value"] | status["too_long"])
    return _appointments_result(raw, found, judged, {"doctor_ok": doctor_ok, "doctor_known": doctor_known,
                                                     "duplicate_rows": duplicate_rows})


def _judge(column: str, grouped: Grouped, day_first: bool) -> dict[str, np.ndarray]:
    """The rule of ``column`` applied to its distinct values, taken back to one entry per row."""
    if column == "booking_date":
        parts = _parse_dates(grouped.distinct, day_first)
    elif column == "status":
        hygiene = scrub(grouped.distinct)
        parts = {"status": _statuses(hygiene["text"]),
                 **{key: np.asarray(hygiene[key]) for key in ("not_value", "too_long", "scrubbed")}}
    else:
        parts = _parse_distinct_ids(grouped)
    return {name: np.asarray(values)[grouped.codes] for name, values in parts.items()}


def _appointments_result(raw: pd.DataFrame, found: _Reasons, judged: dict[str, dict[str, np.ndarray]],
                         checks: dict[str, np.ndarray]) -> CleanResult:
    dates, status = judged["booking_date"], judged["status"]
    keep = ~found.any()
    # The whole numbers in one block, which pandas takes as it is (a dict of columns is copied into one).
    numbers = {"id": judged["booking_id"]["value"], "patient_id": judged["patient_id"]["value"],
               "doctor_id": judged["doctor_id"]["value"], SOURCE_ROW: raw[SOURCE_ROW].to_numpy()}
    block = np.empty((len(numbers) + 1, int(keep.sum())), dtype="int64")
    for row, values in zip(block, numbers.values()):
        row[:] = values[keep]
    block[-1] = to_micros(*(dates[key][keep] for key in ("days", "seconds", "micros")))
    valid = pd.DataFrame(block.T, columns=[*numbers, "booking_date"], copy=False)
    valid.insert(len(numbers) + 1, "status", status["status"][keep])
    unknown = (status["status"] == "unknown") & keep
    unknown_raw = raw_cells(raw["status"][unknown]).fillna("<empty>").str.strip().value_counts()
    ok = {column: ~(judged[column]["missing"] | judged[column]["invalid"]) for column in ("booking_id", "patient_id")}
    stats = {
        "read": len(raw), "ids_complete": int((ok["patient_id"] & checks["doctor_ok"]).sum()),
        "doctor_id_valid": int(checks["doctor_ok"].sum()), "doctor_known": int(checks["doctor_known"].sum()),
        "exact_duplicates": int(checks["duplicate_rows"].sum()), "dates_non_empty": int((~dates["missing"]).sum()),
        "dates_parsed": int(dates["parsed"].sum()),
        CONTROL_CHARACTERS: int(sum(judged[column]["scrubbed"].sum() for column in APPOINTMENT_COLUMNS)),
        **found.counts(),
    }
    rejected = _rejected_frame(raw, APPOINTMENT_COLUMNS, "appointments", found, judged["booking_id"]["value"],
                               ok["booking_id"])
    return CleanResult(valid, rejected, stats, {str(key): int(value) for key, value in unknown_raw.head(50).items()})


def reason_counts(*results: CleanResult) -> dict[str, int]:
    """Reason code -> number of rejected rows carrying it, over all entities."""
    totals: Counter[str] = Counter()
    for result in results:
        totals.update({key[len("reason:"):]: count for key, count in result.stats.items() if key.startswith("reason:")})
    return dict(sorted(totals.items()))
