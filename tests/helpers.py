"""Test helpers shared by every test folder: real workbooks, database reads, CLI runs."""

import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from healthtech_etl.db import DbConfig, connect


def write_xlsx(path: Path, header: Optional[Sequence[Any]], rows: Sequence[Sequence[Any]], sheet: str = "Sheet1",
               extra_sheets: Sequence[str] = ()) -> Path:
    """Write a real workbook with openpyxl: date cells stay date cells, text stays text."""
    import openpyxl

    workbook = openpyxl.Workbook()
    worksheet = workbook.active
    worksheet.title = sheet
    if header is not None:
        worksheet.append(list(header))
    for row in rows:
        worksheet.append(list(row))
    for name in extra_sheets:
        workbook.create_sheet(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path



DOCTORS_HEADER = ("doctor_id", "name", "specialty")
APPOINTMENTS_HEADER = ("booking_id", "patient_id", "doctor_id", "booking_date", "status")

# A small dataset with known answers, used by integration tests.
DOCTOR_ROWS = [
    (1, "Dr. Ana  García", "cardiology"),
    (2.0, " Dr. Zoë Okafor ", " Pediatrics"),
    ("3", "Dr. Luca Rossi", None),
    ("X4", "Dr. Bad Id", "Neurology"),  # invalid_doctor_id
    (5, None, "Neurology"),  # missing_name
]
APPOINTMENT_ROWS = [
    (101, 34, 1, dt.datetime(2025, 10, 21, 9, 30), "Confirmed"),
    ("102.0", " 34 ", 1, "10/22/2025 14:00", "confirmed"),
    (103, 34, 2, "2025-10-23", "cancelled"),
    (104, 7, 2, 45954, "Canceled"),  # serial 45954 = 2025-10-24
    (105, 7, 2, "10/24/2025 23:59", "CANCELLED"),
    (106, 8, 3, "2025/10/25", "pending"),  # unknown status, loaded
    (107, 8, 1, "2025-10-20T08:00:00", "cancelled"),  # before the window
    ("37X", 9, 1, "10/21/2025", "confirmed"),  # invalid_booking_id
    (108, None, 1, "10/21/2025", "confirmed"),  # missing_patient_id
    (109, 9, 99, "10/21/2025", "confirmed"),  # unknown_doctor
    (110, 9, 1, "02/30/2025", "confirmed"),  # invalid_booking_date
    (111, 9, 1, dt.datetime(2300, 1, 1), "confirmed"),  # booking_date_out_of_range
    (112, 9, 1, None, "confirmed"),  # missing_booking_date
    (101, 34, 1, dt.datetime(2025, 10, 21, 9, 30), "Confirmed"),  # duplicate_row
    (102, 10, 2, "10/22/2025", "confirmed"),  # duplicate_booking_id
    (113, 11, "Dr 200", "10/22/2025", "confirmed"),  # invalid_doctor_id
]
AS_OF = "2025-11-01"



DB_ENV_KEYS = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "DOCTORS_INPUT",
               "APPOINTMENTS_INPUT")


def skipped_rows_table(page: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column headers, {entity: its count cells}) of quality_report.html's skipped-rows table
    (the oddities section: entity, ignored columns, then one column per count)."""
    section = page[page.index('<section id="oddities">'):]
    table = section[section.index("<thead><tr><th>entity</th>"):section.index("</section>")]
    headers = re.findall(r"<th>(.*?)</th>", table)
    rows = {cells[0]: cells[2:] for cells in
            (re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr><td>.*?</tr>", table))}
    return headers, rows


def fetch(config: DbConfig, sql: str, **params: Any) -> list[list[Any]]:
    connection = connect(config)
    try:
        return [list(row) for row in connection.run(sql, **params)]
    finally:
        connection.close()


def snapshot(config: DbConfig) -> dict[str, Any]:
    """Everything a failed run must leave untouched."""
    return {
        "doctors": fetch(config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id"),
        "appointments": fetch(config, "SELECT id, patient_id, doctor_id, booking_date, status "
                                      "FROM healthtech.appointments ORDER BY id"),
        # A gated run records its own rejected rows (and nothing else): those are not counted here.
        "rejections": fetch(config, "SELECT count(*) FROM healthtech.etl_rejections WHERE run_id NOT IN "
                                    "(SELECT run_id FROM healthtech.etl_runs WHERE status = 'gated')"),
    }



def cli_subprocess(args: Sequence[str], cwd: Path, env: dict[str, str], timeout: int = 120,
                   wait: bool = True) -> Any:
    """The console script in a child process (exit codes and stderr as a user sees them)."""
    clean_env = {k: v for k, v in os.environ.items() if k not in DB_ENV_KEYS}
    clean_env.update(env)
    command = [sys.executable, "-m", "healthtech_etl.cli", *args]
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=cwd, env=clean_env, capture_output=True, text=True, timeout=timeout)


def waits_for_the_load_lock(config: DbConfig, process: "subprocess.Popen[str]", limit: float = 60) -> bool:
    """Whether ``process`` (a run started while the test holds the load lock) is seen blocked on
    that advisory lock before it exits or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        if fetch(config, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
            return True
        time.sleep(0.05)  # polling for a state change, bounded by the deadline
    return False


# The appointments table's keys and indexes, as the catalog defines them (a load that drops and
# rebuilds them must leave exactly these).
SCHEMA_SQL = """
    SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
    WHERE conrelid = 'healthtech.appointments'::regclass
    UNION ALL
    SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'healthtech' AND tablename = 'appointments'
    ORDER BY 1"""
