"""End to end, against PostgreSQL: the CLI gives the same exit code, tables, rejections and
report with every reader on hostile workbooks (raw SpreadsheetML), and dates past 2262 are stored
exactly."""

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
from helpers import cli_subprocess, fetch, skipped_rows_table
from raw_xlsx import b, e, inline, n, s, write_raw_xlsx
from raw_xlsx import date as date_cell

from healthtech_etl.extract import available_readers

READERS = [*available_readers(), "auto", "auto (own process)"]
VOLATILE = ("run_id", "generated_at", "timings_seconds")


def hostile_inputs(tmp_path: Path) -> tuple[Path, Path]:
    doctors = write_raw_xlsx(tmp_path / "doctors.xlsx", [
        [s("Doctors export")], None,
        [s("doctor_id"), s("name"), s("specialty")],
        [n(1), s("Dr. Ana_x0000_ García"), s("cardiology")],
        [n(2), e("#NAME?"), None],
        [None, s("Dr. No Id"), None],  # the all-empty record_id column of the original bug
        [n(3), s("_x0001__x0000_"), b(True)],
        [n(4), inline("Dr. Ok"), inline("x" * 40_000)],
        [n(5), s("Dr. Five"), None],
    ], first_row=2)
    appointments = write_raw_xlsx(tmp_path / "appointments.xlsx", [
        None, None,
        [None, s("booking_id"), s("patient_id"), s("doctor_id"), s("booking_date"), s("status")],
        [None, n(101), n(34), n(1), date_cell("45950.395833333336"), s("confirmed")],
        [None, n(2**53 + 1), n(34), n(1), date_cell(45950), s("confirmed")],
        [None, n(103), n(34), n(5), e("#VALUE!"), s("cancelled")],
        [None, n(104), b(False), n(5), date_cell(-18000), s("cancelled")],
        [None, n(105), n(7), n(5), date_cell(146_099), s("confirmed")],  # 2300-01-01
        [None, n(106), n(7), n(5), s("12/31/9999 23:59"), s("x_x0000_")],
        [None, s("9007199254740993"), n(7), n(5), s("10/21/2025"), e("#N/A")],
    ], first_column=1)
    return doctors, appointments


def run_once(run_cli, db_config, tmp_path: Path, inputs: tuple[Path, Path], reader: str) -> dict:
    args = ["etl", "--doctors", str(inputs[0]), "--appointments", str(inputs[1]), "--as-of", "2025-11-01",
            "--horizon-days", "3000000"]
    if reader == "auto (own process)":
        # As a user runs it: a process of its own, where the appointments' fastexcel read
        # starts early in a child (see dense_read) and the exit skips the teardown.
        done = cli_subprocess(args, cwd=tmp_path, env={"DATABASE_URL": db_config.url()})
        code = done.returncode
        if "fastexcel" in available_readers() and sys.platform.startswith("linux"):
            log = (tmp_path / "logs" / "etl_pipeline.log").read_text(encoding="utf-8")
            assert "fastexcel's read started early" in log, log[-2000:]
    else:
        code = run_cli(*args, "--reader", reader)
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text(encoding="utf-8"))
    for key in VOLATILE:
        report.pop(key, None)
    for entity in report["inputs"].values():
        entity.pop("reader")
    return {
        "exit": code,
        "doctors": fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id"),
        "appointments": fetch(db_config, "SELECT id, patient_id, doctor_id, booking_date, status "
                                         "FROM healthtech.appointments ORDER BY id"),
        "rejections": fetch(db_config, "SELECT entity, source_file, row_number, record_id, reasons, raw::text "
                                       "FROM healthtech.etl_rejections WHERE run_id = (SELECT run_id FROM "
                                       "healthtech.etl_runs ORDER BY started_at DESC LIMIT 1) "
                                       "ORDER BY entity, row_number"),
        "report": report,
    }


def test_every_reader_loads_the_same_hostile_workbooks(run_cli, db_config, tmp_path):
    inputs = hostile_inputs(tmp_path / "in")
    results = {reader: run_once(run_cli, db_config, tmp_path, inputs, reader) for reader in READERS}
    reference = results[READERS[0]]
    for reader, result in results.items():
        assert result == reference, reader
    assert reference["exit"] == 0
    assert reference["doctors"] == [[1, "Dr. Ana García", "Cardiology"], [5, "Dr. Five", None]]
    assert reference["appointments"] == [
        [101, 34, 1, dt.datetime(2025, 10, 20, 9, 30), "confirmed"],
        [105, 7, 5, dt.datetime(2300, 1, 1), "confirmed"],
        [106, 7, 5, dt.datetime(9999, 12, 31, 23, 59), "unknown"],
    ]
    reasons = {(row[0], row[2]): row[4] for row in reference["rejections"]}
    assert reasons == {
        ("doctors", 6): ["invalid_name"],
        ("doctors", 7): ["missing_doctor_id"],
        ("doctors", 8): ["missing_name", "invalid_specialty"],
        ("doctors", 9): ["invalid_specialty"],
        ("appointments", 5): ["invalid_booking_id"],
        ("appointments", 6): ["invalid_booking_date"],
        ("appointments", 7): ["invalid_patient_id", "booking_date_out_of_range"],
        ("appointments", 10): ["invalid_status"],
    }
    counts = reference["report"]["counts"]
    assert counts["doctors"]["rows_above_header_skipped"] == 3  # row 1 (empty), the title, a blank row
    assert counts["appointments"]["rows_above_header_skipped"] == 2
    assert counts["doctors"]["control_characters_removed"] == 2
    assert counts["appointments"]["control_characters_removed"] == 1
    # The run's page shows the same counts (the last reader's run wrote it).
    page = (tmp_path / "reports" / "quality_report.html").read_text(encoding="utf-8")
    keys = ("blank_rows_skipped", "rows_above_header_skipped", "control_characters_removed")
    assert skipped_rows_table(page)[1] == {entity: [str(counts[entity][key]) for key in keys]
                                           for entity in ("doctors", "appointments")}
    assert "\\u0000" not in json.dumps(reference["rejections"])


@pytest.mark.parametrize("args", [["--horizon-days", "9223372036854775000"], ["--horizon-days", "-1"],
                                  ["--as-of", "9999-12-31", "--horizon-days", "3652059"]])
def test_a_window_that_would_overflow_is_a_usage_error(run_cli, db_config, tmp_path, args):
    inputs = hostile_inputs(tmp_path / "in")
    code = run_cli("etl", "--doctors", str(inputs[0]), "--appointments", str(inputs[1]), *args)
    assert code == 2
    assert fetch(db_config, "SELECT count(*) FROM pg_tables WHERE schemaname = 'healthtech'") == [[0]]
