"""The bench's input workbooks, generated once per version of their generator (cached in
benchmarks/.cache/workbooks/): the "clean" file (the project's sample generator), the "messy"
file (benchmarks/messy.py) and the merge line's "previous month" of the clean file."""

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from common import BENCH, CACHE, PYTHON, ROOT

GENERATORS = {
    "clean": ROOT / "src" / "healthtech_etl" / "sample.py",
    "messy": BENCH / "messy.py",
}


class Inputs:
    """One file set: its kind, paths, the 0-based header row (both sheets) and how long it
    took to generate."""

    def __init__(self, kind: str, doctors: Path, appointments: Path, header_row: int, seconds: float) -> None:
        self.kind, self.doctors, self.appointments = kind, doctors, appointments
        self.header_row, self.generation_seconds = header_row, seconds

    def describe(self) -> dict:
        return {"doctors": str(self.doctors.relative_to(ROOT)), "appointments": str(self.appointments.relative_to(ROOT)),
                "appointments_bytes": self.appointments.stat().st_size, "header_row": self.header_row,
                "generation_seconds": self.generation_seconds}


def workbooks(kind: str, rows: int, seed: int) -> Inputs:
    """The ``kind`` workbooks for ``rows``, generated (in a child process) if not cached."""
    version = hashlib.sha256(GENERATORS[kind].read_bytes()).hexdigest()[:10]
    folder = CACHE / "workbooks" / f"{kind}-rows{rows}-seed{seed}-{version}"
    marker = folder / "complete.json"
    if not marker.exists():
        for stale in folder.parent.glob(f"{kind}-rows{rows}-seed{seed}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        print(f"generating the {kind} workbooks, {rows:,} appointment rows (seed {seed}), in {folder} ...", flush=True)
        clock = time.perf_counter()
        if kind == "clean":
            command = [PYTHON, "-c", "import sys; from healthtech_etl.sample import write_sample_workbooks as w; "
                       "w(sys.argv[1], rows=int(sys.argv[2]), seed=int(sys.argv[3]))", str(folder), str(rows), str(seed)]
        else:
            command = [PYTHON, str(BENCH / "messy.py"), str(folder), "--rows", str(rows), "--seed", str(seed)]
        subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        header_row = 0 if kind == "clean" else _messy_header_row()
        marker.write_text(json.dumps({"seconds": round(time.perf_counter() - clock, 2), "header_row": header_row})
                          + "\n")
    info = json.loads(marker.read_text())
    return Inputs(kind, folder / "doctors.xlsx", folder / "appointments.xlsx", info["header_row"], info["seconds"])


def _messy_header_row() -> int:
    import messy

    return messy.HEADER_ROW


def previous_month(rows: int, seed: int, doctors: Path) -> Path:
    """The "previous month" appointments workbook for the merge line, next to the clean
    sample's (cached): the sample's rows regenerated, then ids up to rows/2 kept (every 5th with
    its status flipped: 10% of the rows changed) and the other ids moved past the sample's, so
    half of the sample's ids are already loaded and half are new."""
    from healthtech_etl.sample import APPOINTMENT_HEADER, sample_appointments, sample_doctors, write_workbook

    path = doctors.parent / "previous_appointments.xlsx"
    if path.exists():
        return path
    print(f"generating the previous month for the merge line in {path} ...", flush=True)
    import numpy as np

    rng = np.random.default_rng(seed)  # the same draws as write_sample_workbooks
    doctor_count = max(12, min(5000, rows // 2000))
    sample_doctors(doctor_count, rng)
    out = []
    for booking, patient, doctor, when, status in sample_appointments(rows, doctor_count, rng):
        number = _plain_int(booking)
        if number is not None and number <= rows // 2:
            if number % 5 == 0:
                status = "cancelled" if str(status or "").strip().lower().startswith("confirm") else "confirmed"
        elif number is not None:
            booking = number + rows
        out.append((booking, patient, doctor, when, status))
    write_workbook(path.with_suffix(".tmp.xlsx"), APPOINTMENT_HEADER, out, "appointments").replace(path)
    return path


def _plain_int(value: Any) -> Optional[int]:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() else None
