"""The quality contract through the real CLI (real workbooks, real PostgreSQL): proportionate
defaults, a contract file (or pyproject.toml table) that moves the gate, bad contracts refused
before anything starts, and the offending values and verdict of a file like the one in issue 19 -
every expected number computed here from the rows the test wrote, never copied from a run."""

import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import APPOINTMENTS_HEADER, DOCTORS_HEADER, fetch

AS_OF = dt.date(2025, 11, 1)
HORIZON = 365
DOCTOR_IDS = (100, 101, 102, 103, 104)
DOCTORS = [(doctor, f"Dr. {doctor}", "General practice") for doctor in DOCTOR_IDS]


def clean_rows(count: int) -> list[list]:
    """``count`` valid appointments (doctors 100-104, dates inside the window)."""
    start = dt.datetime(2025, 10, 1, 9, 0)
    return [[5000 + i, 1 + (i * 7) % 300, DOCTOR_IDS[i % 5], start + dt.timedelta(days=i % 28, hours=i % 8),
             "confirmed" if i % 3 else "cancelled"] for i in range(count)]


def issue_rows() -> list[list]:
    """The export of issue 19: 1,025 appointments, two doctor ids missing from doctors.xlsx and a
    block of booking dates dragged down one year per row (Excel's fill handle)."""
    rows = clean_rows(1025)
    for i in range(0, 900, 6)[:150]:
        rows[i][2] = 105
    for i in range(1, 100, 4):
        rows[i][2] = 106
    for k, i in enumerate(range(452, 622)):  # 170 rows, one year apart from 2027-01-15
        rows[i][3] = dt.datetime(2027 + k, 1, 15, 10, 0)
    return rows


def etl(run_cli, doctors: Path, appointments: Path, *extra: str, env=None) -> int:
    return run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF.isoformat(),
                   *extra, env=env)


def report_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "reports" / "quality_report.json").read_text(encoding="utf-8"))


def sheet_row(index: int) -> int:
    return index + 2  # the header is row 1


def test_a_handful_of_missing_ids_is_a_warning_and_the_file_loads(run_cli, make_xlsx, db_config, tmp_path, capsys):
    rows = clean_rows(1000)
    for i in (17, 400, 901):
        rows[i][1] = None
    doctors = make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTORS)
    appointments = make_xlsx("appointments.xlsx", APPOINTMENTS_HEADER, rows)
    assert etl(run_cli, doctors, appointments, "--fail-on", "critical") == 0
    report = report_of(tmp_path)
    assert report["status"] == "warning" and report["load_status"] == "succeeded"
    assert (report["metrics"]["id_completeness"]["value"], report["metrics"]["id_completeness"]["status"]) == (
        99.7, "warning")
    assert report["contract"]["source"] == "built-in defaults" and report["contract"]["sha256"] is None
    assert fetch(db_config, "SELECT count(*) FROM healthtech.appointments") == [[997]]
    missing = report["offending"]["appointments"]["missing_patient_id"]
    assert (missing["count"], missing["first_row"], missing["last_row"]) == (3, sheet_row(17), sheet_row(901))
    assert report["verdict"].startswith("Loaded 997 of 1,000 appointments (99.7 %) and 5 of 5 doctors;")
    out = capsys.readouterr().out.splitlines()
    assert out[1].strip() == report["verdict"]  # first line after the run line


def passing(rows: list[list]) -> int:
    last_allowed = AS_OF + dt.timedelta(days=HORIZON)
    return sum(1 for row in rows if row[2] in DOCTOR_IDS and row[3].date() <= last_allowed)


def test_a_third_rejected_is_critical_and_the_gate_stops_it(run_cli, make_xlsx, db_config, tmp_path, capsys):
    rows = issue_rows()
    share = 100.0 * passing(rows) / len(rows)
    assert 60 < share < 70  # about a third rejected
    doctors = make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTORS)
    appointments = make_xlsx("appointments.xlsx", APPOINTMENTS_HEADER, rows)
    assert etl(run_cli, doctors, appointments, "--fail-on", "critical") == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"acceptance_rate {share:.2f} % < 75 (critical)" in err[0]
    report = report_of(tmp_path)
    assert report["status"] == "critical" and report["load_status"] == "gated"
    assert report["verdict"].startswith("Nothing loaded: data quality CRITICAL stopped the run (--fail-on critical); "
                                        f"{passing(rows):,} of {len(rows):,} appointments ({share:.1f} %)")
    assert "unknown_doctor" in report["verdict"] and "booking_date_out_of_range" in report["verdict"]
    assert fetch(db_config, "SELECT count(*) FROM healthtech.etl_runs WHERE status = 'succeeded'") == [[0]]


def test_offending_values_profile_and_verdict_match_the_rows_written(run_cli, make_xlsx, tmp_path, capsys):
    rows = issue_rows()
    doctors = make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTORS)
    appointments = make_xlsx("appointments.xlsx", APPOINTMENTS_HEADER, rows)
    assert etl(run_cli, doctors, appointments) == 0
    report = report_of(tmp_path)
    offending = report["offending"]["appointments"]

    unknown = [(sheet_row(i), row[2]) for i, row in enumerate(rows) if row[2] not in DOCTOR_IDS]
    expected_top = sorted(Counter(doctor for _, doctor in unknown).items(), key=lambda item: -item[1])
    assert offending["unknown_doctor"] == {
        "count": len(unknown), "column": "doctor_id", "first_row": min(r for r, _ in unknown),
        "last_row": max(r for r, _ in unknown),
        "top_values": [{"value": str(doctor), "count": count,
                        "first_row": min(r for r, d in unknown if d == doctor),
                        "last_row": max(r for r, d in unknown if d == doctor)} for doctor, count in expected_top],
        "known_doctor_ids": {"count": len(DOCTOR_IDS), "min": str(min(DOCTOR_IDS)), "max": str(max(DOCTOR_IDS)),
                             "basis": "doctors_in_file"}}

    last_allowed = AS_OF + dt.timedelta(days=HORIZON)
    late = [(sheet_row(i), row[3].date()) for i, row in enumerate(rows) if row[3].date() > last_allowed]
    dates = offending["booking_date_out_of_range"]
    assert (dates["count"], dates["first_row"], dates["last_row"]) == (len(late), late[0][0], late[-1][0])
    assert dates["date_range"] == {
        "found_min": min(d for _, d in late).isoformat(), "found_max": max(d for _, d in late).isoformat(),
        "allowed_min": "1900-01-01", "allowed_max": last_allowed.isoformat(),
        "pattern": f"one year per row, rows {late[0][0]}-{late[-1][0]}"}
    assert set(offending) == {"unknown_doctor", "booking_date_out_of_range"}

    doctor_column = report["profile"]["appointments"]["doctor_id"]
    written = Counter(row[2] for row in rows)
    assert doctor_column["rows"] == len(rows) and doctor_column["nulls"] == 0
    assert doctor_column["distinct"] == len(written)
    assert (doctor_column["min"], doctor_column["max"]) == (str(min(written)), str(max(written)))
    assert doctor_column["top_values"] == [{"value": str(d), "count": n} for d, n in
                                           sorted(written.items(), key=lambda item: (-item[1], item[0]))[:5]]

    verdict = report["verdict"]
    assert verdict.startswith(f"Loaded {passing(rows):,} of {len(rows):,} appointments")
    first, second = sorted((("unknown_doctor", len(unknown)), ("booking_date_out_of_range", len(late))),
                           key=lambda item: -item[1])
    assert verdict.index(first[0]) < verdict.index(second[0])  # the biggest cause first
    assert f"unknown_doctor ({len(unknown)} rows: doctor_id 105, 106; doctors.xlsx holds 5 ids, 100-104)" in verdict
    assert f"{min(d for _, d in late)} .. {max(d for _, d in late)}" in verdict
    out = capsys.readouterr().out
    assert out.splitlines()[1].strip() == verdict
    summary = [line for line in out.splitlines() if line.startswith("  appointments unknown_doctor:")]
    assert len(summary) == 1 and f"'105' x{written[105]}" in summary[0]


CONTRACT = """# stricter than the defaults: any missing id is critical
[metrics.id_completeness]
warning = 100
critical = 99.9

[[checks]]
entity = "appointments"
column = "booking_date"
range = [2025-10-01, 2025-10-20]
"""


def test_a_contract_file_moves_the_gate_and_is_recorded(run_cli, make_xlsx, db_config, tmp_path, capsys):
    rows = clean_rows(1000)
    for i in (17, 400, 901):
        rows[i][1] = None
    doctors = make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTORS)
    appointments = make_xlsx("appointments.xlsx", APPOINTMENTS_HEADER, rows)
    contract = tmp_path / "quality.toml"
    contract.write_text(CONTRACT, encoding="utf-8")

    assert etl(run_cli, doctors, appointments, "--fail-on", "critical", "--contract", str(contract)) == 5
    assert "id_completeness 99.70 % < 99.9 (critical)" in capsys.readouterr().err
    report = report_of(tmp_path)
    assert report["contract"]["source"] == str(contract)
    assert report["contract"]["sha256"] == hashlib.sha256(contract.read_bytes()).hexdigest()
    assert report["contract"]["metrics"]["id_completeness"] == {"warning": 100.0, "critical": 99.9,
                                                                "alert_when": "below"}
    outside = sum(1 for row in rows if not dt.date(2025, 10, 1) <= row[3].date() <= dt.date(2025, 10, 20))
    assert report["checks"] == [{
        "entity": "appointments", "column": "booking_date", "check": "range", "expected": "2025-10-01 .. 2025-10-20",
        "value": f"{min(r[3] for r in rows).date()} .. {max(r[3] for r in rows).date()}; {outside:,} outside",
        "status": "warning", "detail": f"{outside:,} of {len(rows):,} booking_date values lie outside "
                                       "2025-10-01 .. 2025-10-20."}]
    assert fetch(db_config, "SELECT count(*) FROM healthtech.etl_runs WHERE status = 'succeeded'") == [[0]]

    # The same table in a pyproject.toml, named by the environment: the gate moves the same way.
    pyproject = tmp_path / "data" / "pyproject.toml"
    pyproject.parent.mkdir()
    pyproject.write_text('[project]\nname = "clinic-data"\n\n' + CONTRACT.replace(
        "[metrics.", "[tool.healthtech-etl.quality.metrics.").replace("[[checks]]", "[[tool.healthtech-etl.quality.checks]]"))
    assert etl(run_cli, doctors, appointments, "--fail-on", "critical", env={"QUALITY_CONTRACT": str(pyproject)}) == 5
    assert report_of(tmp_path)["contract"]["source"] == str(pyproject)
    # Without it, the defaults: a warning, loaded.
    assert etl(run_cli, doctors, appointments, "--fail-on", "critical", env={"QUALITY_CONTRACT": ""}) == 0


@pytest.mark.parametrize("text, where", [
    ("[metrics.acceptance_rate]\nwarning = 90\n\n# typo below\ncritical = 750\n",
     "line 5: metrics.acceptance_rate.critical: must be a percentage from 0 to 100"),
    ('[[checks]]\nentity = "appointments"\ncolumn = "booking_date"\nrange = [2020-01-01, 2027-12-31]\n\n'
     '[[checks]]\nentity = "appointments"\ncolumn = "doctor"\nrequired_share = 99\n',
     "line 8: checks[1].column: must be a column of appointments"),
    ("[metrics.duplicate_rate]\nwarning = 5\ncritical = 20\nwarning = 6\n", "not valid TOML"),
])
def test_a_bad_contract_exits_2_before_anything_starts(run_cli, make_xlsx, db_config, tmp_path, capsys, text, where):
    doctors = make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTORS)
    appointments = make_xlsx("appointments.xlsx", APPOINTMENTS_HEADER, clean_rows(10))
    contract = tmp_path / "bad.toml"
    contract.write_text(text, encoding="utf-8")
    assert etl(run_cli, doctors, appointments, "--contract", str(contract)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"healthtech-etl: error: quality contract {contract}")
    assert where in err[0] and ("line 4" in err[0] if "TOML" in where else True)
    assert not (tmp_path / "reports").exists() and not (tmp_path / "logs").exists()
    assert fetch(db_config, "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'healthtech'") == [[0]]
