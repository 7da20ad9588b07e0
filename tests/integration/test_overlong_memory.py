"""A 300 KB doctors workbook whose one shared string is 200 MiB of text: the real CLI, in a child
process, peaks at no more memory than with the same workbook holding a short name (the text is
cut before any reader allocates it, see overlong.py); the row is still rejected as invalid_name
with its first 32,767 characters stored, and the run succeeds."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import APPOINTMENT_ROWS, APPOINTMENTS_HEADER, AS_OF, DB_ENV_KEYS, fetch, write_xlsx
from raw_xlsx import inline, n, s, stream_into, write_raw_xlsx

MIB = 1 << 20
LONG_MIB = 200
HEADROOM = 60 * MIB


def doctors(path: Path, long: bool) -> Path:
    write_raw_xlsx(path, [[s("doctor_id"), s("name"), s("specialty")], [n(1), s("Dr Ana"), s("cardiology")],
                          [n(2), s("PLACEHOLDER"), s("pediatrics")]])
    block = b"A" * MIB
    text = itertools.repeat(block, LONG_MIB) if long else [b"Dr Short"]
    return stream_into(path, "xl/sharedStrings.xml", b'<t xml:space="preserve">PLACEHOLDER</t>',
                       itertools.chain([b"<t>"], text, [b"</t>"]))


def run_etl(cwd: Path, doctors_path: Path, appointments: Path, url: str) -> tuple[int, int]:
    """Exit code and peak resident memory (bytes) of ``healthtech-etl etl`` run in a child."""
    cwd.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in DB_ENV_KEYS}
    env["DATABASE_URL"] = url
    command = [sys.executable, "-m", "healthtech_etl.cli", "etl", "--doctors", str(doctors_path),
               "--appointments", str(appointments), "--as-of", AS_OF]
    with open(cwd / "output.txt", "wb") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024  # Linux: kilobytes


def compare_runs(tmp_path: Path, db_config, control: tuple, hostile: tuple, entity: str) -> list:
    """Run the CLI on the control and the hostile (doctors, appointments) pair; the hostile run
    must succeed within HEADROOM of the control's peak memory. Returns its rejected rows of
    ``entity``: (row_number, reasons, raw)."""
    code, control_peak = run_etl(tmp_path / "control-run", *control, db_config.url())
    assert code == 0, (tmp_path / "control-run" / "output.txt").read_text()
    code, peak = run_etl(tmp_path / "hostile-run", *hostile, db_config.url())
    assert code == 0, (tmp_path / "hostile-run" / "output.txt").read_text()
    assert peak <= control_peak + HEADROOM, f"peak {peak / MIB:.0f} MiB vs {control_peak / MIB:.0f} MiB with short text"
    run_id = json.loads((tmp_path / "hostile-run" / "reports" / "quality_report.json").read_text())["run_id"]
    return fetch(db_config, "SELECT row_number, reasons, raw FROM healthtech.etl_rejections "
                            "WHERE entity = :entity AND run_id = :run_id", entity=entity, run_id=run_id)


def test_a_200_mib_shared_string_costs_no_memory_and_is_still_rejected(tmp_path, db_config):
    appointments = write_xlsx(tmp_path / "appointments.xlsx", APPOINTMENTS_HEADER, APPOINTMENT_ROWS)
    short = doctors(tmp_path / "short" / "doctors.xlsx", long=False)
    hostile = doctors(tmp_path / "long" / "doctors.xlsx", long=True)
    assert hostile.stat().st_size < 400_000

    rejected = compare_runs(tmp_path, db_config, (short, appointments), (hostile, appointments), "doctors")
    assert [(row, reasons) for row, reasons, _ in rejected] == [(3, ["invalid_name"])]
    assert rejected[0][2]["name"] == "A" * 32_767
    log = (tmp_path / "hostile-run" / "logs" / "etl_pipeline.log").read_text()
    assert "doctors.xlsx: 1 text value(s) in xl/sharedStrings.xml over 32,767 characters" in log


def appointments_with(path: Path, long: bool) -> Path:
    """The status of one appointment is an inline string in the sheet XML itself: 200 MiB of
    text (this sheet is read through the CLI's early prefetch of the appointments)."""
    header = [s(name) for name in ("booking_id", "patient_id", "doctor_id", "booking_date", "status")]
    write_raw_xlsx(path, [header, [n(101), n(34), n(1), inline("2025-10-21"), inline("confirmed")],
                          [n(102), n(34), n(2), inline("2025-10-22"), inline("PLACEHOLDER")]])
    block = b"c" * MIB
    text = itertools.repeat(block, LONG_MIB) if long else [b"cancelled"]
    return stream_into(path, "xl/worksheets/sheet1.xml", b'<t xml:space="preserve">PLACEHOLDER</t>',
                       itertools.chain([b"<t>"], text, [b"</t>"]))


def test_a_200_mib_inline_string_in_the_appointments_sheet_costs_no_memory(tmp_path, db_config):
    doctors_path = doctors(tmp_path / "doctors" / "doctors.xlsx", long=False)
    short = appointments_with(tmp_path / "short" / "appointments.xlsx", long=False)
    hostile = appointments_with(tmp_path / "long" / "appointments.xlsx", long=True)
    assert hostile.stat().st_size < 400_000

    rejected = compare_runs(tmp_path, db_config, (doctors_path, short), (doctors_path, hostile), "appointments")
    assert [(row, reasons) for row, reasons, _ in rejected] == [(3, ["invalid_status"])]
    assert rejected[0][2]["status"] == "c" * 32_767
