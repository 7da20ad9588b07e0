"""Messy sample workbooks, like real clinic exports (``healthtech-etl sample``), deterministic for
a seed: every kind of mess the cleaner handles (ids, date formats, statuses, duplicates, orphans...)."""

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import progress

DOCTOR_HEADER = ("doctor_id", "name", "specialty")
APPOINTMENT_HEADER = ("booking_id", "patient_id", "doctor_id", "booking_date", "status")

_FIRST = ["Ana", "José", "Chloé", "Mei", "Omar", "Ingrid", "Luca", "Priya", "Sven", "Zoë", "Tomás", "Aisha"]
_LAST = ["García", "Müller", "Nguyen", "Okafor", "Rossi", "Søndergaard", "Kowalski", "Haddad", "Smith", "Dubois"]
_SPECIALTIES = ["cardiology", " Dermatology", "PEDIATRICS ", "neurology", "Orthopedics", "general practice", ""]
_STATUS_VARIANTS = [
    ("confirmed", 40), ("Confirmed", 15), ("CONFIRMED ", 5), (" confirmed!", 2), ("cancelled", 12),
    ("Canceled", 8), ("CANCELLED", 4), ("cancel-led", 1), ("pending", 2), ("no show", 1), ("", 1),
]
_DATE_STYLES = ("cell", "serial", "mdy", "mdy_short_time", "ymd", "ymd_slash", "mdy_dash", "iso")
_DATE_FORMATS = {"mdy": "%m/%d/%Y", "ymd": "%Y-%m-%d %H:%M:%S", "ymd_slash": "%Y/%m/%d", "mdy_dash": "%m-%d-%Y %H:%M",
                 "iso": "%Y-%m-%dT%H:%M:%S"}


def _render_date(moment: dt.datetime, style: str) -> Any:
    if style == "cell":
        return moment
    if style == "serial":  # an Excel serial: days since 1899-12-30
        delta = moment - dt.datetime(1899, 12, 30)
        return round(delta.days + delta.seconds / 86400.0, 6)
    if style == "mdy_short_time":
        return f"{moment.month}/{moment.day}/{moment.year} {moment:%H:%M}"
    return moment.strftime(_DATE_FORMATS[style])


def _render_id(value: int, style: float) -> Any:
    if style < 0.80:
        return int(value)
    if style < 0.90:
        return float(value)
    if style < 0.95:
        return f"{value}.0"
    return f" {value} "


def sample_doctors(count: int, rng: np.random.Generator) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for doctor_id in range(1, count + 1):
        name = f"Dr. {_FIRST[doctor_id % len(_FIRST)]} {_LAST[(doctor_id * 7) % len(_LAST)]}"
        if doctor_id % 5 == 0:
            name = f"  {name.replace(' ', '   ', 1)} "
        specialty = _SPECIALTIES[int(rng.integers(len(_SPECIALTIES)))]
        rows.append((_render_id(doctor_id, float(rng.random())), name, specialty or None))
    # invalid_doctor_id, missing_name, duplicate_row, duplicate_doctor_id
    return rows + [("D-9", "Dr. Junk Id", "Cardiology"), (count + 1, None, "Neurology"), rows[2],
                   (3, "Dr. Someone Else", "Oncology")]


def sample_appointments(rows: int, doctor_count: int, rng: np.random.Generator) -> list[tuple[Any, ...]]:
    """``rows`` appointment rows (mess included), booking dates Sept-Dec 2025."""
    patients = max(50, rows // 5)
    patient_ids = rng.integers(1, patients + 1, size=rows)
    patient_ids[rng.random(rows) < 0.03] = 34  # patient 34 has a history worth querying
    doctor_ids = rng.integers(1, doctor_count + 1, size=rows)
    orphan = rng.random(rows) < 0.01
    doctor_ids[orphan] = doctor_count + 100 + rng.integers(1, 5, size=int(orphan.sum()))
    start = dt.datetime(2025, 9, 1, 8, 0)
    minutes = rng.integers(0, 122 * 24 * 4, size=rows) * 15
    weights = np.array([w for _, w in _STATUS_VARIANTS], dtype=float)
    statuses = rng.choice(len(_STATUS_VARIANTS), size=rows, p=weights / weights.sum())
    date_styles = rng.integers(0, len(_DATE_STYLES), size=rows)
    id_styles = rng.random((rows, 3))
    mess = rng.random(rows)

    out: list[tuple[Any, ...]] = []
    for i in range(rows):
        moment = start + dt.timedelta(minutes=int(minutes[i]))
        booking: Any = _render_id(i + 1, id_styles[i, 0])
        patient: Any = _render_id(int(patient_ids[i]), id_styles[i, 1])
        doctor: Any = _render_id(int(doctor_ids[i]), id_styles[i, 2])
        when: Any = _render_date(moment, _DATE_STYLES[date_styles[i]])
        kind = mess[i]
        if kind < 0.005:
            booking = f"{i + 1}X"  # invalid_booking_id
        elif kind < 0.010:
            patient = None  # missing_patient_id
        elif kind < 0.015:
            doctor = f"Dr {int(doctor_ids[i])}"  # invalid_doctor_id
        elif kind < 0.020:
            when = ["02/30/2025", "31/31/2025", "next tuesday", "2025-13-01"][i % 4]  # invalid_booking_date
        elif kind < 0.023:
            when = None  # missing_booking_date
        elif kind < 0.027:
            when = [dt.datetime(2300, 1, 1, 9, 0), "01/01/2301", dt.datetime(1850, 5, 5)][i % 3]  # out of range
        out.append((booking, patient, doctor, when, _STATUS_VARIANTS[statuses[i]][0] or None))
    # Exact duplicates (~1 %) and repeated booking ids with other content (~0.5 %).
    # Each copy lands a little after its original (stable sort of fractional positions).
    copies = rng.integers(0, rows, size=max(1, rows // 100))
    positions = np.concatenate([np.arange(rows, dtype=float), copies + rng.integers(1, 50, size=len(copies)) + 0.5])
    with_copies = out + [out[int(source)] for source in copies]
    out = [with_copies[int(k)] for k in np.argsort(positions, kind="stable")]
    for source in rng.integers(0, rows, size=max(1, rows // 200)):
        booking, patient, doctor, when, status = out[int(source)]
        out.append((booking, patient, doctor, _render_date(start, "mdy"), "cancelled"))
    return out


def write_workbook(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]], sheet: str) -> Path:
    """Write one sheet (xlsxwriter when installed - much faster - else openpyxl)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import xlsxwriter
    except ImportError:
        xlsxwriter = None
    if xlsxwriter is not None:
        workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True})
        worksheet = workbook.add_worksheet(sheet)
        date_format = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm"})
        worksheet.write_row(0, 0, list(header))
        for r, row in enumerate(progress.counted(rows), start=1):
            for c, value in enumerate(row):
                if isinstance(value, dt.datetime):
                    worksheet.write_datetime(r, c, value, date_format)
                elif isinstance(value, str):
                    worksheet.write_string(r, c, value)
                elif value is not None:
                    worksheet.write_number(r, c, value)
        workbook.close()
        return path
    import openpyxl

    workbook = openpyxl.Workbook(write_only=True)
    worksheet = workbook.create_sheet(sheet)
    worksheet.append(list(header))
    for row in progress.counted(rows):
        worksheet.append(list(row))
    workbook.save(str(path))
    return path


def write_sample_workbooks(out_dir: Path, rows: int = 200, seed: int = 7) -> tuple[Path, Path]:
    """Write ``doctors.xlsx`` and ``appointments.xlsx`` (about ``rows`` appointments) to ``out_dir``."""
    rng = np.random.default_rng(seed)
    doctor_count = max(12, min(5000, rows // 2000))
    out_dir = Path(out_dir)
    doctors = write_workbook(out_dir / "doctors.xlsx", DOCTOR_HEADER, sample_doctors(doctor_count, rng), "doctors")
    progress.start("sample", "appointments.xlsx", total=rows)
    appointments = write_workbook(out_dir / "appointments.xlsx", APPOINTMENT_HEADER,
                                  sample_appointments(rows, doctor_count, rng), "appointments")
    progress.done()
    return doctors, appointments
