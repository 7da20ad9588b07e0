"""Pure cleaning rules: cell-text frames in, typed valid rows + explained rejections out.

No I/O here. Every function takes and returns pandas/numpy objects and is vectorised: values
that repeat (patient ids, dates, statuses) are parsed once per *distinct* value and mapped back,
which is what keeps a 1M-row export fast. Runs on pandas 1.4+ (AWS Glue) and 2.x.
"""

import unicodedata
from dataclasses import dataclass, field
from datetime import date
from typing import Callable

import numpy as np
import pandas as pd

from . import reasons
from .extract import SOURCE_ROW

DOCTOR_COLUMNS = ("doctor_id", "name", "specialty")
APPOINTMENT_COLUMNS = ("booking_id", "patient_id", "doctor_id", "booking_date", "status")
STATUSES = ("confirmed", "cancelled", "unknown")
MIN_BOOKING_DATE = date(1900, 1, 1)
DEFAULT_HORIZON_DAYS = 365
REASONS = "reasons"
RECORD_ID = "record_id"
ENTITY = "entity"

_ID_PATTERN = r"^\+?0*(\d{1,18})(?:\.0*)?$"
# YYYY-MM-DD, YYYY/MM/DD (same separator twice), optional " HH:MM[:SS[.ffffff]]" or ISO "T".
_YMD_PATTERN = (
    r"^(?P<y>\d{4})(?P<sep>[-/])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})"
    r"(?:[ T](?P<hh>\d{1,2}):(?P<mi>\d{2})(?::(?P<ss>\d{2})(?:\.(?P<us>\d{1,6}))?)?)?$"
)
# MM/DD/YYYY, M/D/YYYY, MM-DD-YYYY (or day first), optional " HH:MM[:SS]".
_MDY_PATTERN = (
    r"^(?P<a>\d{1,2})(?P<sep>[-/])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})"
    r"(?: (?P<hh>\d{1,2}):(?P<mi>\d{2})(?::(?P<ss>\d{2}))?)?$"
)
_SERIAL_PATTERN = r"^\d{1,7}(?:\.\d+)?$"
_EXCEL_EPOCH_DAYS = -25569  # 1899-12-30 as days since 1970-01-01
_NS_PER_SECOND = 1_000_000_000
_SECONDS_PER_DAY = 86_400


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
    codes, uniques = pd.factorize(cells, use_na_sentinel=False) if _HAS_NA_SENTINEL else pd.factorize(
        cells, na_sentinel=None
    )
    parsed = parse(pd.Series(uniques, dtype=object))
    return parsed.iloc[codes].reset_index(drop=True)


_HAS_NA_SENTINEL = tuple(int(part) for part in pd.__version__.split(".")[:2]) >= (1, 5)


def parse_ids(cells: pd.Series) -> pd.DataFrame:
    """Identifiers: integers, integral floats and numeric strings after trimming (``'104.0'``,
    ``' 34 '``). Never guessed: ``'37X'``, ``'Dr 200'``, ``'104.5'``, ``'0'`` are invalid.

    Returns columns ``value`` (int64, 0 where not valid), ``missing`` and ``invalid`` (bool)."""

    def parse(distinct: pd.Series) -> pd.DataFrame:
        stripped = distinct.str.strip()
        missing = distinct.isna() | (stripped == "")
        digits = stripped.str.extract(_ID_PATTERN, expand=False)
        values = pd.to_numeric(digits, errors="coerce").fillna(0).astype("int64")
        valid = (values > 0) & ~missing
        return pd.DataFrame(
            {
                "value": values.where(valid, 0).to_numpy(dtype="int64"),
                "missing": missing.to_numpy(dtype=bool),
                "invalid": (~valid & ~missing).to_numpy(dtype=bool),
            }
        )

    return map_distinct(cells, parse)


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

    def parse(distinct: pd.Series) -> pd.DataFrame:
        text = distinct.str.strip()
        missing = (distinct.isna() | (text == "")).to_numpy(dtype=bool)
        size = len(text)
        year = np.zeros(size, dtype="int64")
        month = np.zeros(size, dtype="int64")
        day = np.zeros(size, dtype="int64")
        seconds = np.zeros(size, dtype="int64")
        micros = np.zeros(size, dtype="int64")
        matched = np.zeros(size, dtype=bool)
        time_ok = np.ones(size, dtype=bool)

        ymd = text.str.extract(_YMD_PATTERN)
        mdy = text.str.extract(_MDY_PATTERN)
        for parts, first, second in ((ymd, "m", "d"), (mdy, "b" if day_first else "a", "a" if day_first else "b")):
            hit = parts["y"].notna().to_numpy()
            hit &= ~matched
            if not hit.any():
                continue
            year[hit] = parts["y"][hit].astype("int64")
            month[hit] = parts[first][hit].astype("int64")
            day[hit] = parts[second][hit].astype("int64")
            hours = pd.to_numeric(parts["hh"], errors="coerce").fillna(0).to_numpy()
            minutes = pd.to_numeric(parts["mi"], errors="coerce").fillna(0).to_numpy()
            secs = pd.to_numeric(parts["ss"], errors="coerce").fillna(0).to_numpy()
            seconds[hit] = (hours * 3600 + minutes * 60 + secs)[hit].astype("int64")
            time_ok[hit] = ((hours < 24) & (minutes < 60) & (secs < 60))[hit]
            if "us" in parts:
                fraction = parts["us"].fillna("").str.ljust(6, "0")
                micros[hit] = pd.to_numeric(fraction, errors="coerce").fillna(0).to_numpy()[hit].astype("int64")
            matched |= hit

        days = np.zeros(size, dtype="int64")
        calendar_ok = matched & (month >= 1) & (month <= 12) & (day >= 1)
        calendar_ok &= day <= _days_in_month(year, month)
        calendar_ok &= time_ok
        days[calendar_ok] = days_from_civil(year[calendar_ok], month[calendar_ok], day[calendar_ok])

        is_serial = text.str.match(_SERIAL_PATTERN, na=False).to_numpy(dtype=bool) & ~matched
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

        parsed = calendar_ok | serial_ok
        return pd.DataFrame(
            {
                "days": np.where(parsed, days, 0),
                "seconds": np.where(parsed, seconds, 0),
                "micros": np.where(calendar_ok, micros, 0),
                "missing": missing,
                "invalid": ~parsed & ~missing,
                "parsed": parsed,
            }
        )

    return map_distinct(cells, parse)


def to_timestamps(days: np.ndarray, seconds: np.ndarray, micros: np.ndarray) -> np.ndarray:
    """``datetime64[ns]`` of in-range values only (callers filter out-of-range days first)."""
    nanos = (days * _SECONDS_PER_DAY + seconds) * _NS_PER_SECOND + micros * 1000
    return nanos.astype("datetime64[ns]")


def normalize_status(cells: pd.Series) -> pd.Series:
    """Trim, lower-case, drop non-letters; ``confirm*`` -> confirmed, ``cancel*`` (incl.
    ``canceled``) -> cancelled; anything else (empty included) -> unknown."""

    def parse(distinct: pd.Series) -> pd.DataFrame:
        letters = distinct.fillna("").str.lower().str.replace(r"[^a-z]", "", regex=True)
        status = np.where(
            letters.str.startswith("confirm"),
            "confirmed",
            np.where(letters.str.startswith("cancel"), "cancelled", "unknown"),
        )
        return pd.DataFrame({"status": status})

    return map_distinct(cells, parse)["status"]


def clean_text(cells: pd.Series) -> pd.Series:
    """Trim, collapse inner whitespace, Unicode NFC (accents kept); empty -> None."""

    def parse(distinct: pd.Series) -> pd.DataFrame:
        text = distinct.fillna("").map(lambda value: unicodedata.normalize("NFC", value))
        text = text.str.replace(r"\s+", " ", regex=True).str.strip()
        return pd.DataFrame({"text": text.where(text != "", None).astype(object)})

    return map_distinct(cells, parse)["text"]


def title_case(cells: pd.Series) -> pd.Series:
    """Specialty: cleaned text, title-cased; empty -> None."""
    text = clean_text(cells)
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


def _rejected_frame(
    raw: pd.DataFrame, columns: tuple[str, ...], entity: str, found: _Reasons, record_ids: np.ndarray,
    id_ok: np.ndarray,
) -> pd.DataFrame:
    rows = np.flatnonzero(found.any())
    rejected = raw.iloc[rows][[SOURCE_ROW, *columns]].reset_index(drop=True)
    ids = pd.Series(record_ids[rows], dtype="int64").astype(object)
    rejected.insert(0, ENTITY, entity)
    rejected.insert(2, RECORD_ID, ids.where(id_ok[rows], None))
    rejected.insert(3, REASONS, found.joined(rows))
    return rejected


# --- entity cleaners --------------------------------------------------------------------------


def clean_doctors(raw: pd.DataFrame) -> CleanResult:
    """Doctors sheet (cell text + source_row) -> valid doctors and rejections."""
    found = _Reasons(len(raw))
    ids = parse_ids(raw["doctor_id"])
    found.add(reasons.missing("doctor_id"), ids["missing"].to_numpy())
    found.add(reasons.invalid("doctor_id"), ids["invalid"].to_numpy())
    names = clean_text(raw["name"])
    found.add(reasons.MISSING_NAME, names.isna().to_numpy())
    found.add(reasons.DUPLICATE_ROW, _exact_duplicates(raw, DOCTOR_COLUMNS))
    id_values = ids["value"].to_numpy()
    _reject_repeated_ids(found, id_values, reasons.DUPLICATE_DOCTOR_ID)

    keep = ~found.any()
    valid = pd.DataFrame(
        {
            "id": id_values[keep],
            "name": names.to_numpy()[keep],
            "specialty": title_case(raw["specialty"]).to_numpy()[keep],
            SOURCE_ROW: raw[SOURCE_ROW].to_numpy()[keep],
        }
    )
    id_ok = ~(ids["missing"].to_numpy() | ids["invalid"].to_numpy())
    rejected = _rejected_frame(raw, DOCTOR_COLUMNS, "doctors", found, id_values, id_ok)
    return CleanResult(valid=valid, rejected=rejected, stats={"read": len(raw), **_prefixed(found.counts())})


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
) -> CleanResult:
    """Appointments sheet (cell text + source_row) -> valid appointments and rejections.

    ``known_doctor_ids``: ids of the doctors being loaded (referential integrity)."""
    size = len(raw)
    found = _Reasons(size)
    parsed_ids = {}
    for column in ("booking_id", "patient_id", "doctor_id"):
        parsed = parse_ids(raw[column])
        found.add(reasons.missing(column), parsed["missing"].to_numpy())
        found.add(reasons.invalid(column), parsed["invalid"].to_numpy())
        parsed_ids[column] = parsed

    dates = parse_booking_dates(raw["booking_date"], day_first=day_first)
    found.add(reasons.MISSING_BOOKING_DATE, dates["missing"].to_numpy())
    found.add(reasons.INVALID_BOOKING_DATE, dates["invalid"].to_numpy())
    days = dates["days"].to_numpy()
    parsed_dates = dates["parsed"].to_numpy()
    low = days_from_civil(*(np.array([part]) for part in (MIN_BOOKING_DATE.year, 1, 1)))[0]
    high = days_from_civil(np.array([as_of.year]), np.array([as_of.month]), np.array([as_of.day]))[0]
    high += horizon_days
    out_of_range = parsed_dates & ((days < low) | (days > high))
    found.add(reasons.BOOKING_DATE_OUT_OF_RANGE, out_of_range)

    duplicate_rows = _exact_duplicates(raw, APPOINTMENT_COLUMNS)
    found.add(reasons.DUPLICATE_ROW, duplicate_rows)

    doctor_ok = ~(parsed_ids["doctor_id"]["missing"].to_numpy() | parsed_ids["doctor_id"]["invalid"].to_numpy())
    doctor_values = parsed_ids["doctor_id"]["value"].to_numpy()
    doctor_known = doctor_ok & np.isin(doctor_values, np.asarray(known_doctor_ids, dtype="int64"))
    found.add(reasons.UNKNOWN_DOCTOR, doctor_ok & ~doctor_known)

    booking_values = parsed_ids["booking_id"]["value"].to_numpy()
    _reject_repeated_ids(found, booking_values, reasons.DUPLICATE_BOOKING_ID)

    statuses = normalize_status(raw["status"]).to_numpy()
    keep = ~found.any()
    valid = pd.DataFrame(
        {
            "id": booking_values[keep],
            "patient_id": parsed_ids["patient_id"]["value"].to_numpy()[keep],
            "doctor_id": doctor_values[keep],
            "booking_date": to_timestamps(
                days[keep], dates["seconds"].to_numpy()[keep], dates["micros"].to_numpy()[keep]
            ),
            "status": statuses[keep],
            SOURCE_ROW: raw[SOURCE_ROW].to_numpy()[keep],
        }
    )
    unknown = (statuses == "unknown") & keep
    unknown_raw = raw["status"][unknown].fillna("<empty>").str.strip().value_counts()
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

