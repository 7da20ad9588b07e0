"""Pure cleaning rules: cell-text frames in, typed valid rows + explained rejections out.

No I/O here. Every function takes and returns pandas/numpy objects and is vectorised: values
that repeat (patient ids, dates, statuses) are parsed once per *distinct* value and mapped back,
which is what keeps a 1M-row export fast. Runs on pandas 1.4+ (AWS Glue) and 2.x.
"""

import re
import unicodedata
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from . import reasons
from ._arrow import pa as _pa  # optional C string kernels (None: the pure-Python path runs)
from ._arrow import pc as _pc
from .columns import APPOINTMENT_COLUMNS, DOCTOR_COLUMNS
from .errors import ConfigError
from .extract import SOURCE_ROW
from .sheet_scan import NOT_A_VALUE

STATUSES = ("confirmed", "cancelled", "unknown")
MIN_BOOKING_DATE = date(1900, 1, 1)
DEFAULT_HORIZON_DAYS = 365
REASONS = "reasons"
RECORD_ID = "record_id"
ENTITY = "entity"

# ASCII digits only: other Unicode digits ('١٢٣', '１２３') are never read as an id.
_ID_PATTERN = r"^\+?0*([0-9]{1,18})(?:\.0*)?$"
# The common renderings ("104", "104.0", " 104 ", "+0104"), read in one pass (Arrow's RE2 when
# installed): a cell this matches reads exactly as the strip + _ID_PATTERN path reads it (only
# ASCII whitespace around, 1-18 digits from the first non-zero one). Others take that path.
_PLAIN_ID_PATTERN = r"^[ \t\n\r\x0b\x0c]*\+?0*(?P<digits>[1-9][0-9]{0,17})(?:\.0*)?[ \t\n\r\x0b\x0c]*$"
_PLAIN_ID = re.compile(_PLAIN_ID_PATTERN)
# ASCII digits only, as for ids. YYYY-MM-DD, YYYY/MM/DD (same separator twice), optional
# " HH:MM[:SS[.ffffff]]" or ISO "T".
_YMD_PATTERN = (
    r"^(?P<y>[0-9]{4})(?P<sep>[-/])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})"
    r"(?:[ T](?P<hh>[0-9]{1,2}):(?P<mi>[0-9]{2})(?::(?P<ss>[0-9]{2})(?:\.(?P<us>[0-9]{1,6}))?)?)?$"
)
# MM/DD/YYYY, M/D/YYYY, MM-DD-YYYY (or day first), optional " HH:MM[:SS]".
_MDY_PATTERN = (
    r"^(?P<a>[0-9]{1,2})(?P<sep>[-/])(?P<b>[0-9]{1,2})(?P=sep)(?P<y>[0-9]{4})"
    r"(?: (?P<hh>[0-9]{1,2}):(?P<mi>[0-9]{2})(?::(?P<ss>[0-9]{2}))?)?$"
)
_SERIAL_PATTERN = r"^[0-9]{1,7}(?:\.[0-9]+)?$"
_EXCEL_EPOCH_DAYS = -25569  # 1899-12-30 as days since 1970-01-01
_MICROS_PER_SECOND = 1_000_000
_SECONDS_PER_DAY = 86_400
MAX_BOOKING_DATE = date(9999, 12, 31)
MAX_HORIZON_DAYS = (MAX_BOOKING_DATE - date(1, 1, 1)).days  # 3,652,058: from any date to past the last
# Longest cell Excel itself can hold: anything longer did not come from Excel and is rejected.
MAX_CELL_CHARS = 32_767
CONTROL_CHARACTERS = "control_characters_removed"
# Removed from text before it is judged: C0 controls but tab, newline and carriage return (which
# count as whitespace), DEL, lone surrogates (not encodable) and the non-characters U+FFFE/U+FFFF.
_CONTROL_PATTERN = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]"
_CONTROL = re.compile(_CONTROL_PATTERN)
# The same for Arrow's RE2 (UTF-8 text never holds surrogates).
_CONTROL_RE2 = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f\\x{fffe}\\x{ffff}]"


@dataclass
class CleanResult:
    """``valid``: typed rows ready to load. ``rejected``: one row per rejected record with
    ``entity``, ``source_row``, ``record_id`` (parsed id or None), ``reasons`` (``;``-joined
    codes) and the raw cell text of every mandatory column. ``stats``: counts for metrics."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    stats: dict[str, int] = field(default_factory=dict)
    unknown_statuses: dict[str, int] = field(default_factory=dict)


# --- single-column parsers (Series of cell text in, arrays out) -------------------------------


def map_distinct(cells: pd.Series, parse: Callable[[pd.Series], pd.DataFrame]) -> pd.DataFrame:
    """Apply a vectorised ``parse`` to the distinct values of ``cells`` only, then map back.

    Empty cells (None) are passed as a distinct value too."""
    codes, distinct = _factorize(cells)
    return _map_codes(codes, parse(distinct))


def scrub(values: pd.Series) -> dict[str, Any]:
    """Text hygiene of distinct cell values, before anything judges them.

    Returns ``text`` (control characters removed, see :data:`_CONTROL_PATTERN`),
    ``not_value`` (error cells, booleans and inexact numbers: :data:`NOT_A_VALUE` first),
    ``too_long`` (over :data:`MAX_CELL_CHARS` characters) and ``scrubbed`` (a character was
    removed). Only the flagged values are touched in Python."""
    size = len(values)
    flagged = _flag_unusual(values)
    not_value = np.zeros(size, dtype=bool)
    too_long = np.zeros(size, dtype=bool)
    scrubbed = np.zeros(size, dtype=bool)
    if not flagged.any():
        return {"text": values, "not_value": not_value, "too_long": too_long, "scrubbed": scrubbed}
    text = values.to_numpy(dtype=object).copy()
    for position in np.flatnonzero(flagged):
        value = text[position]
        if value.startswith(NOT_A_VALUE):
            not_value[position] = True
            continue
        if len(value) > MAX_CELL_CHARS:
            too_long[position] = True
            continue
        cleaned = _CONTROL.sub("", value)
        scrubbed[position] = cleaned != value
        text[position] = cleaned
    return {"text": pd.Series(text, index=values.index, dtype=object), "not_value": not_value,
            "too_long": too_long, "scrubbed": scrubbed}


def _flag_unusual(values: pd.Series) -> np.ndarray:
    """Values holding a control character, :data:`NOT_A_VALUE` or over the length limit."""
    if _pa is not None:
        try:
            array = _pa.array(values.to_numpy(dtype=object), type=_pa.string(), from_pandas=True)
        except (_pa.ArrowInvalid, _pa.ArrowTypeError, UnicodeEncodeError):  # e.g. a lone surrogate
            array = None
        if array is not None:
            hit = _pc.or_(_pc.match_substring_regex(array, _CONTROL_RE2),
                          _pc.greater(_pc.utf8_length(array), MAX_CELL_CHARS))
            return hit.fill_null(False).to_numpy(zero_copy_only=False)
    if not len(values):
        return np.zeros(0, dtype=bool)
    text = values.astype(object)
    hit = text.str.contains(_CONTROL_PATTERN, regex=True, na=False).to_numpy(dtype=bool)
    return hit | (text.str.len() > MAX_CELL_CHARS).fillna(False).to_numpy(dtype=bool)


def validate_window(as_of: date, horizon_days: int) -> None:
    """Raise :class:`ConfigError` unless ``horizon_days`` is a whole number from 0 to
    :data:`MAX_HORIZON_DAYS` (the window's end is then computed in int64 days, never
    overflowing, and clipped to :data:`MAX_BOOKING_DATE`)."""
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, (int, np.integer)):
        raise ConfigError(f"the booking date horizon must be a whole number of days (got {horizon_days!r})")
    if not isinstance(as_of, date):
        raise ConfigError(f"--as-of must be a date (got {as_of!r})")
    if not 0 <= horizon_days <= MAX_HORIZON_DAYS:
        raise ConfigError(
            f"the booking date horizon must be 0 to {MAX_HORIZON_DAYS:,} days (any window past "
            f"{MAX_BOOKING_DATE.isoformat()} is the same window); got {horizon_days}"
        )


def factorize_quietly(values: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize`` (missing values get code -1) without pandas 1.4/1.5's "Index constructor
    will not infer numeric dtypes" warning for an all-empty object column: the result is
    right, the warning is noise (gone in pandas 2)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will not infer numeric dtypes.*", category=FutureWarning)
        return pd.factorize(values)


def _factorize(cells: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Codes of ``cells`` and their distinct values (None included, as a value of its own)."""
    # Missing cells get code -1 first (use_na_sentinel=False would cost an extra isna pass
    # and a copy of the column), then the code after the last distinct value.
    codes, uniques = factorize_quietly(cells)
    distinct = pd.Series(uniques, dtype=object)
    missing = codes < 0
    if missing.any():
        codes = np.where(missing, len(distinct), codes)
        distinct = pd.concat([distinct, pd.Series([None], dtype=object)], ignore_index=True)
    return codes, distinct


def _column_codes(
    raw: pd.DataFrame, column: str, encoded: Optional[dict[str, tuple[np.ndarray, np.ndarray]]]
) -> tuple[np.ndarray, pd.Series]:
    """:func:`_factorize` of ``raw[column]``, free when the reader already grouped it."""
    known = (encoded or {}).get(column)
    if known is not None and len(known[0]) == len(raw):
        return known[0], pd.Series(known[1], dtype=object)
    return _factorize(raw[column])


def _map_codes(codes: np.ndarray, parsed: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``parsed`` (one per distinct value) taken back to one per cell, column by column."""
    return pd.DataFrame(_map_columns(codes, parsed))


def _map_columns(codes: np.ndarray, parsed: Any) -> dict[str, pd.Series]:
    """:func:`_map_codes` as separate Series: no frame to consolidate (a copy of every column).
    ``parsed``: a frame or a dict of arrays."""
    return {name: pd.Series(np.asarray(values)[codes], copy=False) for name, values in parsed.items()}


def parse_ids(cells: pd.Series) -> pd.DataFrame:
    """Identifiers: integers, integral floats and numeric strings after trimming (``'104.0'``,
    ``' 34 '``). Never guessed: ``'37X'``, ``'Dr 200'``, ``'104.5'``, ``'0'`` are invalid.

    Returns columns ``value`` (int64, 0 where not valid), ``missing`` and ``invalid`` (bool)."""
    return map_distinct(cells, _parse_distinct_ids)


def _parse_distinct_ids(distinct: pd.Series, arrow: Any = None) -> dict[str, np.ndarray]:
    size = len(distinct)
    canonical, numbers = _plain_ids(distinct, arrow)
    missing = np.zeros(size, dtype=bool)
    invalid = np.zeros(size, dtype=bool)
    scrubbed = np.zeros(size, dtype=bool)
    rest = np.flatnonzero(~canonical)
    if len(rest):
        hygiene = scrub(distinct.iloc[rest])
        other = _parse_id_text(hygiene["text"])
        bad = hygiene["not_value"] | hygiene["too_long"]
        numbers[rest] = np.where(bad, 0, other["value"])
        missing[rest] = other["missing"] & ~bad
        invalid[rest] = other["invalid"] | bad
        scrubbed[rest] = hygiene["scrubbed"]
    return {"value": numbers, "missing": missing, "invalid": invalid, "scrubbed": scrubbed}


def _plain_ids(distinct: pd.Series, arrow: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Mask of the cells :data:`_PLAIN_ID_PATTERN` reads (all valid ids) and their values (0
    elsewhere). Every other cell goes through :func:`_parse_id_text`. ``arrow``: the same
    values as an Arrow string array, when there is one (no conversion back to Arrow)."""
    values = distinct.to_numpy(dtype=object)
    if _pa is not None:
        try:
            text = arrow if arrow is not None and arrow.type == _pa.string() and len(arrow) == len(values) \
                else _pa.array(values, type=_pa.string(), from_pandas=True)
        except (_pa.ArrowInvalid, _pa.ArrowTypeError):  # not all text: the general path decides
            text = None
        if text is not None:
            digits = _pc.extract_regex(text, _PLAIN_ID_PATTERN).flatten()[0]  # null where no match
            mask = digits.is_valid()
            numbers = _pc.cast(digits.fill_null("0"), _pa.int64())
            return mask.to_numpy(zero_copy_only=False), numbers.to_numpy(zero_copy_only=False).astype("int64")
    # Without pyarrow: "104" (1-18 ASCII digits, no leading zero) by str methods, the other
    # renderings by the regex; -1 marks a cell neither reads.
    match = _PLAIN_ID.match
    numbers = np.fromiter(
        (
            int(value)
            if value.__class__ is str and value.isdigit() and value.isascii() and len(value) < 19 and value[0] != "0"
            else _match_id(match, value)
            for value in values
        ),
        "int64",
        len(values),
    )
    mask = numbers >= 0
    numbers[~mask] = 0
    return mask, numbers


def _match_id(match: Callable[[str], Any], value: Any) -> int:
    found = match(value) if value.__class__ is str else None
    return int(found.group(1)) if found is not None else -1


def _parse_id_text(distinct: pd.Series) -> dict[str, np.ndarray]:
    stripped = distinct.str.strip()
    missing = (distinct.isna() | (stripped == "")).to_numpy(dtype=bool)
    digits = stripped.str.extract(_ID_PATTERN, expand=False)
    found = digits.notna().to_numpy(dtype=bool)
    values = np.zeros(len(distinct), dtype="int64")
    # At most 18 ASCII digits: exact in int64 (never through float, which rounds above 2**53).
    values[found] = digits[found].astype("int64").to_numpy()
    valid = (values > 0) & ~missing
    return {"value": np.where(valid, values, 0), "missing": missing, "invalid": ~valid & ~missing}


def days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of a proleptic Gregorian date, in int64 (no year limit)."""
    year = year.astype("int64") - (month <= 2)
    era = np.floor_divide(year, 400)
    year_of_era = year - era * 400
    month_index = (month.astype("int64") + 9) % 12
    day_of_year = (153 * month_index + 2) // 5 + day.astype("int64") - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _days_in_month(year: np.ndarray, month: np.ndarray) -> np.ndarray:
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    lengths = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype="int64")
    return lengths[np.clip(month, 0, 12)] + ((month == 2) & leap)


def parse_booking_dates(cells: pd.Series, day_first: bool = False) -> pd.DataFrame:
    """Parse booking dates without ever going through a bounded datetime type.

    Accepts Excel date cells (rendered ``YYYY-MM-DD HH:MM:SS``), Excel serial numbers,
    ``MM/DD/YYYY``, ``M/D/YYYY``, ``MM-DD-YYYY`` (day first when ``day_first``), ``YYYY-MM-DD``,
    ``YYYY/MM/DD``, each with an optional ``HH:MM[:SS]``, and ISO ``YYYY-MM-DDTHH:MM:SS``.

    Returns ``days`` (int64 days since 1970-01-01), ``seconds`` (int64 seconds into the day),
    ``micros``, and bool ``missing`` / ``invalid`` / ``parsed``."""
    return map_distinct(cells, _date_parser(day_first))


def _date_parser(day_first: bool) -> Callable[[pd.Series], pd.DataFrame]:
    """The per-distinct-value parser behind :func:`parse_booking_dates`."""

    def parse(distinct: pd.Series) -> pd.DataFrame:
        hygiene = scrub(distinct)
        distinct = hygiene["text"]
        bad = hygiene["not_value"] | hygiene["too_long"]
        text = distinct.str.strip()
        missing = (distinct.isna() | (text == "")).to_numpy(dtype=bool) & ~bad
        size = len(text)
        year = np.zeros(size, dtype="int64")
        month = np.zeros(size, dtype="int64")
        day = np.zeros(size, dtype="int64")
        seconds = np.zeros(size, dtype="int64")
        micros = np.zeros(size, dtype="int64")
        matched = np.zeros(size, dtype=bool)
        time_ok = np.ones(size, dtype=bool)

        # Each pattern is tried on the values no earlier pattern matched, and only its hits
        # are converted.
        pending = np.arange(size)
        for pattern, first, second in (
            (_YMD_PATTERN, "m", "d"), (_MDY_PATTERN, "b" if day_first else "a", "a" if day_first else "b")
        ):
            if not len(pending):
                break
            parts = text.iloc[pending].str.extract(pattern)
            found = parts["y"].notna().to_numpy()
            if not found.any():
                continue
            hit = pending[found]
            parts = parts[found]
            year[hit] = parts["y"].astype("int64")
            month[hit] = parts[first].astype("int64")
            day[hit] = parts[second].astype("int64")
            hours = pd.to_numeric(parts["hh"], errors="coerce").fillna(0).to_numpy()
            minutes = pd.to_numeric(parts["mi"], errors="coerce").fillna(0).to_numpy()
            secs = pd.to_numeric(parts["ss"], errors="coerce").fillna(0).to_numpy()
            seconds[hit] = (hours * 3600 + minutes * 60 + secs).astype("int64")
            time_ok[hit] = (hours < 24) & (minutes < 60) & (secs < 60)
            if "us" in parts:
                fraction = parts["us"].fillna("").str.ljust(6, "0")
                micros[hit] = pd.to_numeric(fraction, errors="coerce").fillna(0).to_numpy().astype("int64")
            matched[hit] = True
            pending = pending[~found]

        days = np.zeros(size, dtype="int64")
        calendar_ok = matched & (month >= 1) & (month <= 12) & (day >= 1)
        calendar_ok &= day <= _days_in_month(year, month)
        calendar_ok &= time_ok
        days[calendar_ok] = days_from_civil(year[calendar_ok], month[calendar_ok], day[calendar_ok])

        is_serial = np.zeros(size, dtype=bool)
        if len(pending):
            is_serial[pending] = text.iloc[pending].str.match(_SERIAL_PATTERN, na=False).to_numpy(dtype=bool)
        serial_ok = np.zeros(size, dtype=bool)
        if is_serial.any():
            serial = pd.to_numeric(text[is_serial], errors="coerce").to_numpy(dtype="float64")
            whole = np.floor(serial).astype("int64")
            # Excel's 1900 system counts the non-existent 1900-02-29 as serial 60.
            good = (whole >= 1) & (whole != 60)
            offset = np.where(whole < 60, _EXCEL_EPOCH_DAYS + 1, _EXCEL_EPOCH_DAYS)
            positions = np.flatnonzero(is_serial)
            serial_ok[positions[good]] = True
            days[positions] = np.where(good, whole + offset, 0)
            day_seconds = np.round((serial - whole) * _SECONDS_PER_DAY).astype("int64")
            seconds[positions] = np.where(good, np.minimum(day_seconds, _SECONDS_PER_DAY - 1), 0)

        parsed = (calendar_ok | serial_ok) & ~bad
        return pd.DataFrame(
            {
                "days": np.where(parsed, days, 0),
                "seconds": np.where(parsed, seconds, 0),
                "micros": np.where(calendar_ok & parsed, micros, 0),
                "missing": missing,
                "invalid": ~parsed & ~missing,
                "parsed": parsed,
                "scrubbed": hygiene["scrubbed"],
            }
        )

    return parse


def to_micros(days: np.ndarray, seconds: np.ndarray, micros: np.ndarray) -> np.ndarray:
    """Microseconds since 1970-01-01 (int64), exact for every date up to 9999-12-31: never
    through ``datetime64[ns]``, which ends in 2262. This is how ``booking_date`` is carried
    to the database (see :mod:`healthtech_etl.copy_data`)."""
    days = np.asarray(days, dtype="int64")
    return (days * _SECONDS_PER_DAY + np.asarray(seconds, dtype="int64")) * _MICROS_PER_SECOND \
        + np.asarray(micros, dtype="int64")


def micros_to_datetime64(values: np.ndarray) -> np.ndarray:
    """``datetime64[us]`` of :func:`to_micros` values (numpy's, any year up to 9999)."""
    return np.asarray(values, dtype="int64").astype("datetime64[us]")


def normalize_status(cells: pd.Series) -> pd.Series:
    """Trim, lower-case, drop non-letters; ``confirm*`` -> confirmed, ``cancel*`` (incl.
    ``canceled``) -> cancelled; anything else (empty included) -> unknown."""
    return map_distinct(cells, _parse_distinct_statuses)["status"]


def _parse_distinct_statuses(distinct: pd.Series) -> pd.DataFrame:
    letters = distinct.fillna("").str.lower().str.replace(r"[^a-z]", "", regex=True)
    status = np.where(
        letters.str.startswith("confirm"),
        "confirmed",
        np.where(letters.str.startswith("cancel"), "cancelled", "unknown"),
    )
    return pd.DataFrame({"status": status.astype(object)})


def clean_text(cells: pd.Series) -> pd.Series:
    """Trim, collapse inner whitespace, Unicode NFC (accents kept), control characters removed;
    empty -> None. Error cells, booleans and over-long cells are None too (see
    :func:`clean_text_parts` for the flags)."""
    return clean_text_parts(cells)["text"]


def clean_text_parts(cells: pd.Series) -> pd.DataFrame:
    """:func:`clean_text` with, per cell, ``invalid`` (error cell, boolean, inexact number or
    over :data:`MAX_CELL_CHARS` characters) and ``scrubbed`` (a control character removed)."""
    return map_distinct(cells, _parse_distinct_text)


def _parse_distinct_text(distinct: pd.Series) -> pd.DataFrame:
    hygiene = scrub(distinct)
    bad = hygiene["not_value"] | hygiene["too_long"]
    text = hygiene["text"].where(~bad, None).fillna("").map(lambda value: unicodedata.normalize("NFC", value))
    text = text.str.replace(r"\s+", " ", regex=True).str.strip()
    return pd.DataFrame({"text": text.where(text != "", None).astype(object), "invalid": bad,
                         "scrubbed": hygiene["scrubbed"]})


def title_case(cells: pd.Series) -> pd.Series:
    """Specialty: cleaned text, title-cased; empty -> None."""
    return _title(clean_text(cells))


def _title(text: pd.Series) -> pd.Series:
    return text.where(text.isna(), text.str.title())


# --- rejection bookkeeping ---------------------------------------------------------------------


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
        result = np.zeros(self.size, dtype=bool)
        for _, mask in self.masks:
            result |= mask
        return result

    def joined(self, rows: np.ndarray) -> np.ndarray:
        """``;``-joined codes for the row positions ``rows``."""
        out = np.full(len(rows), "", dtype=object)
        for code, mask in self.masks:
            hit = mask[rows]
            out[hit] = out[hit] + np.where(out[hit] == "", code, ";" + code)
        return out

    def counts(self) -> dict[str, int]:
        return {code: int(mask.sum()) for code, mask in self.masks}


def _exact_duplicates(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    return frame.duplicated(subset=list(columns), keep="first").to_numpy(dtype=bool)


def _duplicate_codes(codes: list[np.ndarray]) -> np.ndarray:
    """:func:`_exact_duplicates` from per-column factorize codes (equal cells, equal codes):
    no second hashing of the cell text. Only rows whose cell in the column with the most
    distinct values occurs more than once can repeat another row: the rest are set aside
    first (an id column: almost all of them)."""
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


def _rejected_frame(
    raw: pd.DataFrame, columns: tuple[str, ...], entity: str, found: _Reasons, record_ids: np.ndarray,
    id_ok: np.ndarray,
) -> pd.DataFrame:
    rows = np.flatnonzero(found.any())
    rejected = raw.iloc[rows][[SOURCE_ROW, *columns]].reset_index(drop=True)
    for column in columns:
        rejected[column] = raw_cells(rejected[column])
    ids = pd.Series(record_ids[rows], dtype="int64").astype(object)
    rejected.insert(0, ENTITY, entity)
    rejected.insert(2, RECORD_ID, ids.where(id_ok[rows], None))
    rejected.insert(3, REASONS, found.joined(rows))
    return rejected


def raw_cells(cells: pd.Series) -> pd.Series:
    """Cell text as shown in rejections: without the :data:`NOT_A_VALUE` mark (an error cell
    shows as ``#VALUE!``), without NUL, lone surrogates or non-characters (PostgreSQL text and
    jsonb refuse NUL), at most :data:`MAX_CELL_CHARS` characters."""
    flagged = _flag_unusual(cells)
    if not flagged.any():
        return cells
    values = cells.to_numpy(dtype=object).copy()
    for position in np.flatnonzero(flagged):
        value = values[position]
        values[position] = _UNSTORABLE.sub("", value[1:] if value.startswith(NOT_A_VALUE) else value)[:MAX_CELL_CHARS]
    return pd.Series(values, index=cells.index, dtype=object)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff\ufffe\uffff]")


# --- entity cleaners --------------------------------------------------------------------------


def clean_doctors(raw: pd.DataFrame) -> CleanResult:
    """Doctors sheet (cell text + source_row) -> valid doctors and rejections."""
    found = _Reasons(len(raw))
    ids = parse_ids(raw["doctor_id"])
    found.add(reasons.missing("doctor_id"), ids["missing"].to_numpy())
    found.add(reasons.invalid("doctor_id"), ids["invalid"].to_numpy())
    name_parts = clean_text_parts(raw["name"])
    names = name_parts["text"]
    name_invalid = name_parts["invalid"].to_numpy(dtype=bool)
    found.add(reasons.INVALID_NAME, name_invalid)
    found.add(reasons.MISSING_NAME, names.isna().to_numpy() & ~name_invalid)
    specialty_parts = clean_text_parts(raw["specialty"])
    found.add(reasons.invalid("specialty"), specialty_parts["invalid"].to_numpy(dtype=bool))
    found.add(reasons.DUPLICATE_ROW, _exact_duplicates(raw, DOCTOR_COLUMNS))
    id_values = ids["value"].to_numpy()
    _reject_repeated_ids(found, id_values, reasons.DUPLICATE_DOCTOR_ID)

    keep = ~found.any()
    valid = pd.DataFrame(
        {
            "id": id_values[keep],
            "name": names.to_numpy()[keep],
            "specialty": _title(specialty_parts["text"]).to_numpy()[keep],
            SOURCE_ROW: raw[SOURCE_ROW].to_numpy()[keep],
        }
    )
    id_ok = ~(ids["missing"].to_numpy() | ids["invalid"].to_numpy())
    rejected = _rejected_frame(raw, DOCTOR_COLUMNS, "doctors", found, id_values, id_ok)
    scrubbed = sum(int(part["scrubbed"].to_numpy(dtype=bool).sum()) for part in (ids, name_parts, specialty_parts))
    stats = {"read": len(raw), CONTROL_CHARACTERS: scrubbed, **_prefixed(found.counts())}
    return CleanResult(valid=valid, rejected=rejected, stats=stats)


def _reject_repeated_ids(found: _Reasons, id_values: np.ndarray, code: str) -> None:
    """Rows passing every other rule but sharing an id with an earlier such row."""
    clean = ~found.any()
    repeated = np.zeros(len(id_values), dtype=bool)
    repeated[clean] = pd.Series(id_values[clean]).duplicated(keep="first").to_numpy()
    found.add(code, repeated)


def _prefixed(counts: dict[str, int]) -> dict[str, int]:
    return {f"reason:{code}": count for code, count in counts.items()}


def clean_appointments(
    raw: pd.DataFrame,
    known_doctor_ids: np.ndarray,
    as_of: date,
    day_first: bool = False,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    encoded: Optional[dict[str, tuple[np.ndarray, np.ndarray]]] = None,
    judged: Optional["Judged"] = None,
) -> CleanResult:
    """Appointments sheet (cell text + source_row) -> valid appointments and rejections.
    ``booking_date`` of the valid rows: int64 microseconds since 1970-01-01 (:func:`to_micros`).

    ``known_doctor_ids``: ids of the doctors being loaded (referential integrity).
    ``encoded``: :attr:`SheetData.encoded` of the same read, if any (a speed-up only).
    ``judged``: :func:`judge_distinct` of the first distinct values of ``encoded``'s columns,
    made elsewhere (the early read's child, see dense_read): a speed-up only, its values
    are those this function would compute."""
    validate_window(as_of, horizon_days)
    with _small_pages():
        return _clean_appointments(raw, known_doctor_ids, as_of, day_first, horizon_days, encoded, judged)


# column -> (how many distinct values, judge_distinct's results for them), and the day_first
# they were judged with.
Judged = tuple[bool, dict[str, tuple[int, dict[str, np.ndarray]]]]


def judge_distinct(column: str, distinct: pd.Series, day_first: bool = False,
                   arrow: Any = None) -> dict[str, np.ndarray]:
    """The judgement of each distinct value of an appointments column (one array per
    property, one entry per value). Value by value: the judgement of a list's first values is
    the first part of the whole list's (what lets another process judge them ahead).
    ``arrow``: the same values as an Arrow string array, if at hand (ids: a speed-up only)."""
    if column in ("booking_id", "patient_id", "doctor_id"):
        return _parse_distinct_ids(distinct, arrow)
    if column == "booking_date":
        frame = _date_parser(day_first)(distinct)
        return {name: frame[name].to_numpy() for name in frame.columns}
    if column == "status":
        hygiene = scrub(distinct)
        status = _parse_distinct_statuses(hygiene["text"])["status"].to_numpy()
        return {"status": status, **{key: np.asarray(hygiene[key]) for key in ("not_value", "too_long", "scrubbed")}}
    raise ValueError(f"no judgement for column {column!r}")


def _judgement(column: str, distinct: pd.Series, day_first: bool, judged: Optional[Judged]) -> dict[str, np.ndarray]:
    """:func:`judge_distinct` of ``distinct``, taking what ``judged`` already holds of it."""
    done = judged[1].get(column) if judged is not None and judged[0] == day_first else None
    if done is None or done[0] > len(distinct):
        return judge_distinct(column, distinct, day_first)
    count, results = done
    if count == len(distinct):
        return results
    rest = judge_distinct(column, distinct.iloc[count:].reset_index(drop=True), day_first)
    return {name: np.concatenate([results[name], np.asarray(rest[name])]) for name in results}


@contextmanager
def _small_pages() -> Iterator[None]:
    """Stop numpy asking the kernel for 2 MiB pages for its large arrays while the cleaning
    step runs. Its many short-lived column temporaries then cost no synchronous huge-page
    compaction and zeroing: 1M rows, ~0.3 s less system time where transparent huge pages are
    on "madvise" (as here); no effect elsewhere. numpy's own switch (NUMPY_MADVISE_HUGEPAGE)."""
    multiarray = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(multiarray, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is None:
        yield
        return
    previous = switch(False)
    try:
        yield
    finally:
        switch(previous)


def _clean_appointments(
    raw: pd.DataFrame,
    known_doctor_ids: np.ndarray,
    as_of: date,
    day_first: bool,
    horizon_days: int,
    encoded: Optional[dict[str, tuple[np.ndarray, np.ndarray]]],
    judged: Optional[Judged] = None,
) -> CleanResult:
    size = len(raw)
    found = _Reasons(size)
    # Each column is hashed once: its codes serve the per-distinct-value parsers and the
    # exact-duplicate check.
    factorized = {column: _column_codes(raw, column, encoded) for column in APPOINTMENT_COLUMNS}
    parsed_ids = {}
    for column in ("booking_id", "patient_id", "doctor_id"):
        codes, distinct = factorized[column]
        parsed = _map_columns(codes, _judgement(column, distinct, day_first, judged))
        found.add(reasons.missing(column), parsed["missing"].to_numpy())
        found.add(reasons.invalid(column), parsed["invalid"].to_numpy())
        parsed_ids[column] = parsed

    codes, distinct = factorized["booking_date"]
    dates = _map_columns(codes, _judgement("booking_date", distinct, day_first, judged))
    found.add(reasons.MISSING_BOOKING_DATE, dates["missing"].to_numpy())
    found.add(reasons.INVALID_BOOKING_DATE, dates["invalid"].to_numpy())
    days = dates["days"].to_numpy()
    parsed_dates = dates["parsed"].to_numpy()
    low = days_from_civil(*(np.array([part]) for part in (MIN_BOOKING_DATE.year, 1, 1)))[0]
    high = days_from_civil(np.array([as_of.year]), np.array([as_of.month]), np.array([as_of.day]))[0]
    # validate_window bounds horizon_days: no overflow; the last date the rules admit is 9999-12-31.
    high = min(high + int(horizon_days), days_from_civil(np.array([9999]), np.array([12]), np.array([31]))[0])
    out_of_range = parsed_dates & ((days < low) | (days > high))
    found.add(reasons.BOOKING_DATE_OUT_OF_RANGE, out_of_range)

    duplicate_rows = _duplicate_codes([factorized[column][0] for column in APPOINTMENT_COLUMNS])
    found.add(reasons.DUPLICATE_ROW, duplicate_rows)

    doctor_ok = ~(parsed_ids["doctor_id"]["missing"].to_numpy() | parsed_ids["doctor_id"]["invalid"].to_numpy())
    doctor_values = parsed_ids["doctor_id"]["value"].to_numpy()
    doctor_known = doctor_ok & np.isin(doctor_values, np.asarray(known_doctor_ids, dtype="int64"))
    found.add(reasons.UNKNOWN_DOCTOR, doctor_ok & ~doctor_known)

    booking_values = parsed_ids["booking_id"]["value"].to_numpy()
    _reject_repeated_ids(found, booking_values, reasons.DUPLICATE_BOOKING_ID)

    codes, distinct = factorized["status"]
    status_hygiene = _judgement("status", distinct, day_first, judged)
    status_bad = (status_hygiene["not_value"] | status_hygiene["too_long"])[codes]
    found.add(reasons.invalid("status"), status_bad)
    statuses = status_hygiene["status"][codes]
    keep = ~found.any()
    valid = pd.DataFrame(
        {
            "id": booking_values[keep],
            "patient_id": parsed_ids["patient_id"]["value"].to_numpy()[keep],
            "doctor_id": doctor_values[keep],
            "booking_date": to_micros(
                days[keep], dates["seconds"].to_numpy()[keep], dates["micros"].to_numpy()[keep]
            ),
            "status": statuses[keep],
            SOURCE_ROW: raw[SOURCE_ROW].to_numpy()[keep],
        }
    )
    unknown = (statuses == "unknown") & keep
    unknown_raw = raw_cells(raw["status"][unknown]).fillna("<empty>").str.strip().value_counts()
    patient_ok = ~(parsed_ids["patient_id"]["missing"].to_numpy() | parsed_ids["patient_id"]["invalid"].to_numpy())
    booking_ok = ~(parsed_ids["booking_id"]["missing"].to_numpy() | parsed_ids["booking_id"]["invalid"].to_numpy())
    stats = {
        "read": size,
        "ids_complete": int((patient_ok & doctor_ok).sum()),
        "doctor_id_valid": int(doctor_ok.sum()),
        "doctor_known": int(doctor_known.sum()),
        "exact_duplicates": int(duplicate_rows.sum()),
        "dates_non_empty": int((~dates["missing"].to_numpy()).sum()),
        "dates_parsed": int(parsed_dates.sum()),
        CONTROL_CHARACTERS: int(sum(parsed["scrubbed"].to_numpy(dtype=bool).sum() for parsed in parsed_ids.values())
                                + dates["scrubbed"].to_numpy(dtype=bool).sum()
                                + status_hygiene["scrubbed"][codes].sum()),
        **_prefixed(found.counts()),
    }
    rejected = _rejected_frame(raw, APPOINTMENT_COLUMNS, "appointments", found, booking_values, booking_ok)
    return CleanResult(
        valid=valid,
        rejected=rejected,
        stats=stats,
        unknown_statuses={str(key): int(value) for key, value in unknown_raw.head(50).items()},
    )


def reason_counts(*results: CleanResult) -> dict[str, int]:
    """Reason code -> number of rejected rows carrying it, over all entities."""
    totals: dict[str, int] = {}
    for result in results:
        for key, count in result.stats.items():
            if key.startswith("reason:"):
                code = key[len("reason:"):]
                totals[code] = totals.get(code, 0) + count
    return dict(sorted(totals.items()))

