"""Booking dates, parsed exactly as int64 days and microseconds since 1970-01-01 (any year up to
9999; never a bounded datetime type): date cells, Excel serial numbers, ``MM/DD/YYYY``,
``M/D/YYYY``, ``MM-DD-YYYY`` (day first when asked), ``YYYY-MM-DD``, ``YYYY/MM/DD``, each with an
optional ``HH:MM[:SS]``, and ISO ``YYYY-MM-DDTHH:MM:SS``."""

import re
from datetime import date

import numpy as np
import pandas as pd

from .cells import map_distinct, scrub
from .errors import ConfigError

MIN_BOOKING_DATE = date(1900, 1, 1)
DEFAULT_HORIZON_DAYS = 365
# ASCII digits only, as for ids. YYYY-MM-DD, YYYY/MM/DD (same separator twice), optional
# " HH:MM[:SS[.ffffff]]" or ISO "T".
_YMD = re.compile(r"^(?P<y>[0-9]{4})(?P<sep>[-/])(?P<m>[0-9]{1,2})(?P=sep)(?P<d>[0-9]{1,2})"
                  r"(?:[ T](?P<hh>[0-9]{1,2}):(?P<mi>[0-9]{2})(?::(?P<ss>[0-9]{2})(?:\.(?P<us>[0-9]{1,6}))?)?)?$")
# MM/DD/YYYY, M/D/YYYY, MM-DD-YYYY (or day first), optional " HH:MM[:SS]".
_MDY = re.compile(r"^(?P<a>[0-9]{1,2})(?P<sep>[-/])(?P<b>[0-9]{1,2})(?P=sep)(?P<y>[0-9]{4})"
                  r"(?: (?P<hh>[0-9]{1,2}):(?P<mi>[0-9]{2})(?::(?P<ss>[0-9]{2}))?)?$")
_SERIAL_PATTERN = r"^[0-9]{1,7}(?:\.[0-9]+)?$"
_EXCEL_EPOCH_DAYS = -25569  # 1899-12-30 as days since 1970-01-01
_MICROS_PER_SECOND = 1_000_000
_SECONDS_PER_DAY = 86_400
MAX_BOOKING_DATE = date(9999, 12, 31)
MAX_HORIZON_DAYS = (MAX_BOOKING_DATE - date(1, 1, 1)).days  # 3,652,058: from any date to past the last
_EPOCH = date(1970, 1, 1).toordinal()


def validate_window(as_of: date, horizon_days: int) -> None:
    """Raise :class:`ConfigError` unless ``horizon_days`` is a whole number from 0 to
    :data:`MAX_HORIZON_DAYS` (the window's end is clipped to :data:`MAX_BOOKING_DATE`)."""
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, (int, np.integer)):
        raise ConfigError(f"the booking date horizon must be a whole number of days (got {horizon_days!r})")
    if not isinstance(as_of, date):
        raise ConfigError(f"--as-of must be a date (got {as_of!r})")
    if not 0 <= horizon_days <= MAX_HORIZON_DAYS:
        raise ConfigError(f"the booking date horizon must be 0 to {MAX_HORIZON_DAYS:,} days (any window past "
                          f"{MAX_BOOKING_DATE.isoformat()} is the same window); got {horizon_days}")


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
    """Parse booking dates (see the module docstring): ``days`` (int64 days since 1970-01-01),
    ``seconds`` (into the day), ``micros``, and bool ``missing`` / ``invalid`` / ``parsed``."""
    return map_distinct(cells, lambda grouped: _parse_dates(grouped.distinct, day_first))


def _parse_dates(distinct: pd.Series, day_first: bool) -> dict[str, np.ndarray]:
    """:func:`parse_booking_dates` of distinct texts."""
    hygiene = scrub(distinct)
    bad = hygiene["not_value"] | hygiene["too_long"]
    text = hygiene["text"].str.strip()
    missing = (hygiene["text"].isna() | (text == "")).to_numpy(dtype=bool) & ~bad
    fields, pending = _calendar_fields(text, day_first)
    calendar_ok = fields["matched"] & (fields["month"] >= 1) & (fields["month"] <= 12) & (fields["day"] >= 1)
    calendar_ok &= (fields["day"] <= _days_in_month(fields["year"], fields["month"])) & fields["time_ok"]
    days = np.zeros(len(text), dtype="int64")
    days[calendar_ok] = days_from_civil(*(fields[key][calendar_ok] for key in ("year", "month", "day")))
    seconds = fields["seconds"]
    serial_ok = _serials(text, pending, days, seconds)
    parsed = (calendar_ok | serial_ok) & ~bad
    return {"days": np.where(parsed, days, 0), "seconds": np.where(parsed, seconds, 0),
            "micros": np.where(calendar_ok & parsed, fields["micros"], 0), "missing": missing,
            "invalid": ~parsed & ~missing, "parsed": parsed, "scrubbed": hygiene["scrubbed"]}


def _calendar_fields(text: pd.Series, day_first: bool) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Year, month, day, seconds and microseconds of the texts a calendar pattern matches
    (:data:`_YMD` first); and the positions none matched."""
    size = len(text)
    fields = {key: np.zeros(size, dtype="int64") for key in ("year", "month", "day", "seconds", "micros")}
    fields["matched"] = np.zeros(size, dtype=bool)
    fields["time_ok"] = np.ones(size, dtype=bool)
    first, second = ("b", "a") if day_first else ("a", "b")
    for index, value in enumerate(text.tolist()):
        found = _YMD.match(value) if value.__class__ is str else None
        month, day = ("m", "d") if found else (first, second)
        found = found or (_MDY.match(value) if value.__class__ is str else None)
        if found is None:
            continue
        hours, minutes, secs = (int(found[key] or 0) for key in ("hh", "mi", "ss"))
        fields["year"][index], fields["month"][index], fields["day"][index] = (
            int(found["y"]), int(found[month]), int(found[day]))
        fields["seconds"][index] = hours * 3600 + minutes * 60 + secs
        fields["time_ok"][index] = hours < 24 and minutes < 60 and secs < 60
        fields["micros"][index] = int((found.groupdict().get("us") or "").ljust(6, "0"))
        fields["matched"][index] = True
    return fields, np.flatnonzero(~fields["matched"])


def _serials(text: pd.Series, pending: np.ndarray, days: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Excel serial numbers among ``pending``, their days and seconds written into ``days``/``seconds``; where read."""
    is_serial = np.zeros(len(text), dtype=bool)
    if len(pending):
        is_serial[pending] = text.iloc[pending].str.match(_SERIAL_PATTERN, na=False).to_numpy(dtype=bool)
    if not is_serial.any():
        return is_serial
    serial = pd.to_numeric(text[is_serial], errors="coerce").to_numpy(dtype="float64")
    whole = np.floor(serial).astype("int64")
    # Excel's 1900 system counts the non-existent 1900-02-29 as serial 60.
    good = (whole >= 1) & (whole != 60)
    offset = np.where(whole < 60, _EXCEL_EPOCH_DAYS + 1, _EXCEL_EPOCH_DAYS)
    positions = np.flatnonzero(is_serial)
    days[positions] = np.where(good, whole + offset, 0)
    day_seconds = np.round((serial - whole) * _SECONDS_PER_DAY).astype("int64")
    seconds[positions] = np.where(good, np.minimum(day_seconds, _SECONDS_PER_DAY - 1), 0)
    is_serial[positions[~good]] = False
    return is_serial


def window(as_of: date, horizon_days: int) -> tuple[int, int]:
    """The first and last day (days since 1970-01-01) a booking date may fall on."""
    last = min(as_of.toordinal() + int(horizon_days), MAX_BOOKING_DATE.toordinal())  # the rules end in 9999
    return MIN_BOOKING_DATE.toordinal() - _EPOCH, last - _EPOCH


def to_micros(days: np.ndarray, seconds: np.ndarray, micros: np.ndarray) -> np.ndarray:
    """Microseconds since 1970-01-01 (int64), exact up to 9999-12-31 (``datetime64[ns]`` ends in 2262):
    how ``booking_date`` is carried to the database (:mod:`.copy_data`)."""
    days = np.asarray(days, dtype="int64")
    return (days * _SECONDS_PER_DAY + np.asarray(seconds, dtype="int64")) * _MICROS_PER_SECOND \
        + np.asarray(micros, dtype="int64")


def micros_to_datetime64(values: np.ndarray) -> np.ndarray:
    """``datetime64[us]`` of :func:`to_micros` values (numpy's, any year up to 9999)."""
    return np.asarray(values, dtype="int64").astype("datetime64[us]")
