"""What the HTML report draws about loaded appointments: per day by status, confirmed per doctor
(top N) and the confirmation ratio per specialty. :func:`frame_aggregates` computes them from the
frames a run loads; ``history.appointment_aggregates`` (SQL, the reference) from the tables."""

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
    """Days since 1970-01-01 of the booking dates (int64 microseconds, or datetime64)."""
    if booking_dates.dtype.kind == "M":
        return booking_dates.astype("datetime64[D]").view("int64")
    return np.floor_divide(booking_dates.astype("int64"), 86_400_000_000)


def frame_aggregates(doctors: pd.DataFrame, appointments: pd.DataFrame,
                     top_doctors: int = TOP_DOCTORS) -> dict[str, Any]:
    """The aggregates of the rows a run loads (``id, name, specialty`` / ``doctor_id, booking_date,
    status``). One int64 key per (day, status) counted by value_counts: lighter than a groupby."""
    days = _day_numbers(appointments["booking_date"].to_numpy())
    codes, labels = pd.factorize(appointments["status"].to_numpy(dtype=object), sort=True)
    width = max(len(labels), 1)
    by_key = pd.Series(days * width + codes).value_counts(sort=False).sort_index()
    keys = by_key.index.to_numpy(dtype="int64")
    per_day = per_day_rows(np.datetime_as_string((keys // width).astype("datetime64[D]")),
                           [labels[code] for code in (keys % width).tolist()], by_key.tolist())

    doctor_ids = pd.Series(appointments["doctor_id"].to_numpy(dtype="int64"))
    totals = doctor_ids.value_counts(sort=False).to_dict()
    confirmed_code = labels.tolist().index("confirmed") if "confirmed" in labels else -2
    confirmed = doctor_ids[codes == confirmed_code].value_counts(sort=False).to_dict()
    ids = doctors["id"].to_numpy(dtype="int64")
    known = list(zip(ids.tolist(), doctors["name"].to_numpy(dtype=object),
                     map(_text_or_none, doctors["specialty"].to_numpy(dtype=object))))
    # Appointments of doctors not in this file (a merge load keeps the database's doctors).
    extra = np.setdiff1d(np.fromiter(totals, dtype="int64", count=len(totals)), ids)
    known += [(doctor_id, f"doctor {doctor_id}", None) for doctor_id in extra.tolist()]
    rows = [(i, name, specialty, confirmed.get(i, 0), totals.get(i, 0)) for i, name, specialty in known]
    return {"per_day": per_day, **from_doctor_counts(rows, top_doctors)}


def _text_or_none(value: Any) -> Optional[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return str(value) or None
