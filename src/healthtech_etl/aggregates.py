"""What the HTML report draws about loaded appointments: per day by status, confirmed per doctor
(top N) and the confirmation ratio per specialty.

Two paths give the same numbers: :func:`frame_aggregates` from the frames a run just loaded
(vectorised pandas, computed while the load runs: no extra time for the run), and
``history.appointment_aggregates`` from the tables (SQL GROUP BY; used to rebuild pages later and
as the reference in the differential test). Pure functions, no I/O.
"""

from collections.abc import Iterable, Sequence
from typing import Any, Optional

import numpy as np
import pandas as pd

TOP_DOCTORS = 30
NO_SPECIALTY = "(none)"


def from_doctor_counts(doctors: Iterable[Sequence[Any]], top_doctors: int = TOP_DOCTORS) -> dict[str, Any]:
    """``per_doctor``, ``per_specialty`` and ``doctors_total`` from one row per doctor:
    (id, name, specialty, confirmed, total) - shared by both paths."""
    rows = [(int(i), name, specialty, int(confirmed), int(total)) for i, name, specialty, confirmed, total in doctors]
    ranked = sorted(rows, key=lambda d: (-d[3], d[0]))
    per_doctor = [{"doctor": f"{name} ({doctor_id})", "confirmed": confirmed}
                  for doctor_id, name, _, confirmed, _ in ranked[:top_doctors]]
    specialties: dict[str, list[int]] = {}
    for _, _, specialty, confirmed, total in rows:
        sums = specialties.setdefault(specialty or NO_SPECIALTY, [0, 0])
        sums[0] += confirmed
        sums[1] += total
    per_specialty = [
        {"specialty": name, "ratio": round(100.0 * confirmed / total, 2), "confirmed": confirmed,
         "appointments": total}
        for name, (confirmed, total) in sorted(specialties.items())
        if total
    ]
    return {"per_doctor": per_doctor, "per_specialty": per_specialty, "doctors_total": len(rows)}


def per_day_rows(days: Iterable[Any], statuses: Iterable[str], counts: Iterable[int]) -> list[dict[str, Any]]:
    return [{"day": str(day)[:10], "status": status, "appointments": int(count)}
            for day, status, count in zip(days, statuses, counts)]


def _day_numbers(booking_dates: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of the cleaner's booking dates (int64 microseconds, see
    clean.to_micros; datetime64 accepted too), any year up to 9999."""
    if booking_dates.dtype.kind == "M":
        return booking_dates.astype("datetime64[D]").view("int64")
    return np.floor_divide(booking_dates.astype("int64"), _MICROS_PER_DAY)


_MICROS_PER_DAY = 86_400_000_000


def frame_aggregates(doctors: pd.DataFrame, appointments: pd.DataFrame,
                     top_doctors: int = TOP_DOCTORS) -> dict[str, Any]:
    """The aggregates of the rows a run loads (``id, name, specialty`` / ``doctor_id, booking_date,
    status``): grouped in pandas, a few hundred values out whatever the row count."""
    # One int64 key per row (day number, status code), counted by hashing (value_counts): a few
    # small arrays, lighter on memory than a DataFrame groupby (the Glue job has 1 GB).
    days = _day_numbers(appointments["booking_date"].to_numpy())
    codes, labels = pd.factorize(appointments["status"].to_numpy(dtype=object), sort=True)
    width = max(len(labels), 1)
    by_key = pd.Series(days * width + codes).value_counts(sort=False).sort_index()
    keys = by_key.index.to_numpy(dtype="int64")
    per_day = per_day_rows(
        np.datetime_as_string((keys // width).astype("datetime64[D]")),
        [labels[code] for code in (keys % width).tolist()], by_key.tolist(),
    )

    doctor_ids = pd.Series(appointments["doctor_id"].to_numpy(dtype="int64"))
    totals = doctor_ids.value_counts(sort=False).to_dict()
    confirmed_code = labels.tolist().index("confirmed") if "confirmed" in labels else -2
    confirmed = doctor_ids[codes == confirmed_code].value_counts(sort=False).to_dict()
    ids = doctors["id"].to_numpy(dtype="int64")
    names = doctors["name"].to_numpy(dtype=object)
    specialties = doctors["specialty"].to_numpy(dtype=object)
    # Appointments of doctors not in this file (a merge load keeps the database's doctors).
    extra = np.setdiff1d(np.fromiter(totals, dtype="int64", count=len(totals)), ids)
    rows = [
        (doctor_id, name, _text_or_none(specialty), confirmed.get(doctor_id, 0), totals.get(doctor_id, 0))
        for doctor_id, name, specialty in zip(ids.tolist(), names, specialties)
    ] + [(doctor_id, f"doctor {doctor_id}", None, confirmed.get(doctor_id, 0), totals.get(doctor_id, 0))
         for doctor_id in extra.tolist()]
    return {"per_day": per_day, **from_doctor_counts(rows, top_doctors)}


def _text_or_none(value: Any) -> Optional[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return str(value) or None
