"""The bench's "messy" workbooks: a clinic export as a person would leave it.

``write_messy_workbooks(folder, rows, seed)`` writes ``doctors.xlsx`` and ``appointments.xlsx``
with xlsxwriter, deterministic for a seed. Unlike the project's own sample (the bench's "clean"
file: numbers, date cells and inline strings), this one is what Excel writes for a sheet typed
by hand:

- two title rows (a title, an export date) and a blank row above the header;
- the appointments' columns plus a free-text ``notes`` column (empty to a few hundred
  characters: accents, commas, quotes, newlines; most notes distinct), all text in a
  shared-strings table, as Excel stores it;
- booking dates typed as text in the formats the cleaner accepts ("2025-09-15 10:30",
  "09/15/2025", "9/15/2025 10:30", "2025/09/15", "09-15-2025 14:45", "2025-09-15T10:30:00");
- about 3 % defects: missing or invalid ids, unknown doctors, impossible dates, dates in a format
  the cleaner does not read ("15.09.2025", "15 Sep 2025"), missing dates, exact duplicate rows
  and repeated booking ids with other content.

    python benchmarks/messy.py OUT_DIR --rows 100000 [--seed 7]
"""

import argparse
import datetime as dt
from pathlib import Path
from typing import Any, Optional

import numpy as np

EXPORTED = "Exported 2025-11-01 06:00 UTC by reception"
HEADER_ROW = 3  # 0-based row of the header: the titles, then a blank row
DOCTOR_HEADER = ("doctor_id", "name", "specialty")
APPOINTMENT_HEADER = ("booking_id", "patient_id", "doctor_id", "booking_date", "status", "notes")

# Accepted by clean.parse_booking_dates (month first: the bench runs without --day-first).
_DATE_FORMATS = (
    lambda m: m.strftime("%Y-%m-%d %H:%M"),
    lambda m: m.strftime("%m/%d/%Y"),
    lambda m: f"{m.month}/{m.day}/{m.year} {m.hour}:{m.minute:02d}",
    lambda m: m.strftime("%Y/%m/%d"),
    lambda m: m.strftime("%m-%d-%Y %H:%M"),
    lambda m: m.strftime("%Y-%m-%dT%H:%M:%S"),
)
_STATUSES = (("Confirmed", 45), ("confirmed", 15), ("CONFIRMED ", 4), ("Cancelled", 14), ("canceled", 8),
             ("CANCELLED", 4), ("Confirmed (phone)", 3), ("Pending", 4), ("", 3))
_FIRST = ("Ana", "José", "Chloé", "Mei", "Omar", "Ingrid", "Luca", "Priya", "Sven", "Zoë", "Tomás", "Aisha",
          "François", "Łukasz", "Seán", "Dagný")
_LAST = ("García", "Müller", "Nguyen", "Okafor", "Rossi", "Søndergaard", "Kowalski", "Haddad", "Smith",
         "Dubois", "O'Brien", "Ibáñez", "Çelik", "Þórsdóttir")
_SPECIALTIES = ("Cardiology", "Dermatology", "Pediatrics", "Neurology", "Orthopedics", "General practice",
                "Obstetrics & gynecology", "Ear, nose and throat")
_PHRASES = (
    "Patient asked to reschedule", "prefers mornings", "called twice, no answer",
    'says "urgent", please check', "needs wheelchair access", "follow-up after surgery",
    "référé par le Dr. Müller", "allergic to penicillin", "bring previous X-rays",
    "insurance: AXA, policy pending", "late last time (20 min)", "interpreter needed: español",
    "parent will accompany", "fasting blood test, 8h before", "résultats à envoyer par e-mail",
    "Tel. +44 20 7946 0958", "paid deposit, 50 €", "«confirmed by SMS»", "no-show in March; warned",
    "Übersetzer benötigt", "asks for Dr. O'Brien only", "see note from 12/09", "tout va bien ✔",
)


def write_messy_workbooks(out_dir: Path, rows: int, seed: int = 7) -> tuple:
    """Write ``doctors.xlsx`` and ``appointments.xlsx`` (``rows`` appointments before the
    duplicates) to ``out_dir``; return their paths."""
    rng = np.random.default_rng(seed)
    doctor_count = max(12, min(5000, rows // 2000))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doctors = write_sheet(out_dir / "doctors.xlsx", "Doctors", DOCTOR_HEADER, messy_doctors(doctor_count, rng))
    appointments = write_sheet(out_dir / "appointments.xlsx", "Appointments", APPOINTMENT_HEADER,
                               messy_appointments(rows, doctor_count, rng))
    return doctors, appointments


def messy_doctors(count: int, rng: np.random.Generator) -> list:
    out: list = []
    for number in range(1, count + 1):
        first, last = _FIRST[number % len(_FIRST)], _LAST[(number * 7) % len(_LAST)]
        name = f"Dr. {first} {last}" if number % 4 else f" dr {first.upper()}  {last} "
        out.append((number, name, _SPECIALTIES[int(rng.integers(len(_SPECIALTIES)))]))
    out.append((count + 1, None, "Cardiology"))  # missing_name
    out.append((2, "Dr. Someone Else", "Oncology"))  # duplicate_doctor_id
    return out


def _notes(rows: int, rng: np.random.Generator) -> list:
    """Free text: a third empty, the rest one to six phrases (some on new lines), most of them
    distinct (a reference, a date or a count of their own)."""
    pool = np.array(_PHRASES, dtype=object)
    counts = rng.choice(7, size=rows, p=[0.34, 0.2, 0.16, 0.12, 0.08, 0.06, 0.04])
    starts = rng.integers(0, len(pool), size=rows)
    steps = rng.integers(1, len(pool), size=rows)
    glue = rng.choice(np.array([", ", "; ", "\n", " - ", ". "], dtype=object), size=rows)
    tails = rng.random(rows)
    refs = rng.integers(1000, 999_999, size=rows)
    out: list = []
    for i in range(rows):
        count = int(counts[i])
        if not count:
            out.append(None)
            continue
        picks = pool[(starts[i] + steps[i] * np.arange(count)) % len(pool)]
        text = str(glue[i]).join(picks)
        tail = tails[i]
        if tail < 0.45:
            text += f" (ref #{refs[i]})"
        elif tail < 0.6:
            text += f'\nCalled on {refs[i] % 28 + 1:02d}/{refs[i] % 12 + 1:02d}, said "ok, will come"'
        elif tail < 0.62:
            text = (text + " ") * (2 + refs[i] % 8)  # a long paste
        out.append(text)
    return out


def messy_appointments(rows: int, doctor_count: int, rng: np.random.Generator) -> list:
    """``rows`` appointments, booking dates Sept-Dec 2025, ~3 % defects (see the module docstring)."""
    patient_ids = rng.integers(1, max(50, rows // 5) + 1, size=rows)
    doctor_ids = rng.integers(1, doctor_count + 1, size=rows)
    start = dt.datetime(2025, 9, 1, 8, 0)
    minutes = rng.integers(0, 120 * 24 * 4, size=rows) * 15
    formats = rng.integers(0, len(_DATE_FORMATS), size=rows)
    weights = np.array([weight for _, weight in _STATUSES], dtype=float)
    statuses = rng.choice(len(_STATUSES), size=rows, p=weights / weights.sum())
    kinds = rng.random(rows)
    notes = _notes(rows, rng)
    out: list = []
    for i in range(rows):
        moment = start + dt.timedelta(minutes=int(minutes[i]))
        row = [i + 1, int(patient_ids[i]), int(doctor_ids[i]), _DATE_FORMATS[formats[i]](moment),
               _STATUSES[statuses[i]][0] or None, notes[i]]
        defect(row, float(kinds[i]), i, doctor_count, moment)
        out.append(tuple(row))
    # Exact duplicate rows (~0.4 %), each a little after its original, and repeated booking ids
    # with other content (~0.2 %, appended at the end as a late re-export would).
    copies = rng.integers(0, rows, size=max(1, rows // 250))
    positions = np.concatenate([np.arange(rows, dtype=float), copies + rng.integers(1, 40, size=len(copies)) + 0.5])
    with_copies = out + [out[int(source)] for source in copies]
    out = [with_copies[int(k)] for k in np.argsort(positions, kind="stable")]
    for source in rng.integers(0, rows, size=max(1, rows // 500)):
        booking, patient, doctor, _, _, note = out[int(source)]
        out.append((booking, patient, doctor, "10/01/2025 09:00", "Cancelled", note))
    return out


def defect(row: list, kind: float, i: int, doctor_count: int, moment: dt.datetime) -> None:
    """Spoil ``row`` in place for ``kind`` below 0.024 (one defect each)."""
    if kind >= 0.024:
        if kind < 0.06:  # harmless mess: ids typed as text, padded
            row[1] = f" {row[1]} "
        return
    if kind < 0.003:
        row[0] = f"BK-{i + 1:07d}"  # invalid_booking_id
    elif kind < 0.005:
        row[0] = None  # missing_booking_id
    elif kind < 0.008:
        row[1] = None if i % 2 else "n/a"  # missing / invalid patient_id
    elif kind < 0.013:
        row[2] = doctor_count + 1 + i % 40  # unknown_doctor
    elif kind < 0.015:
        row[2] = f"Dr {row[2]}"  # invalid_doctor_id
    elif kind < 0.018:
        row[3] = ("2025-02-30 10:00", "13/45/2025", "2025-09-31", "11/31/2025 09:15")[i % 4]  # impossible
    elif kind < 0.021:
        row[3] = (moment.strftime("%d.%m.%Y"), moment.strftime("%d %b %Y"))[i % 2]  # a format not read
    elif kind < 0.023:
        row[3] = None  # missing_booking_date
    else:
        row[3] = ("2031-01-01 10:00", "01/01/1899")[i % 2]  # booking_date_out_of_range


def write_sheet(path: Path, sheet: str, header: tuple, rows: list) -> Path:
    """One sheet: a title row, an export-date row, a blank row, the header (row HEADER_ROW,
    0-based), the rows; strings shared (Excel's way, so not xlsxwriter's constant-memory mode,
    which writes them inline)."""
    import xlsxwriter

    partial = path.with_suffix(".tmp.xlsx")
    workbook = xlsxwriter.Workbook(str(partial), {"strings_to_numbers": False, "strings_to_formulas": False,
                                                  "strings_to_urls": False})
    workbook.set_properties({"created": dt.datetime(2025, 11, 1, 6, 0)})  # same bytes for the same seed
    worksheet = workbook.add_worksheet(sheet)
    worksheet.write_string(0, 0, f"{sheet} export - all clinics", workbook.add_format({"bold": True, "font_size": 14}))
    worksheet.write_string(1, 0, EXPORTED)
    worksheet.write_row(HEADER_ROW, 0, header, workbook.add_format({"bold": True}))
    write_string, write_number = worksheet.write_string, worksheet.write_number
    for r, row in enumerate(rows, start=HEADER_ROW + 1):
        for c, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, str):
                write_string(r, c, value)
            else:
                write_number(r, c, value)
    workbook.close()
    return partial.replace(path)


def main(argv: Optional[list] = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    for path in write_messy_workbooks(args.out_dir, args.rows, args.seed):
        print(path)


if __name__ == "__main__":
    main()
