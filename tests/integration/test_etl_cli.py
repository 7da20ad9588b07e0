import datetime as dt
import hashlib
import json

from helpers import APPOINTMENTS_HEADER, AS_OF, DOCTOR_ROWS, DOCTORS_HEADER, fetch, snapshot

EXPECTED_DOCTORS = [
    [1, "Dr. Ana García", "Cardiology"],
    [2, "Dr. Zoë Okafor", "Pediatrics"],
    [3, "Dr. Luca Rossi", None],
]
EXPECTED_APPOINTMENTS = [
    [101, 34, 1, dt.datetime(2025, 10, 21, 9, 30), "confirmed"],
    [102, 34, 1, dt.datetime(2025, 10, 22, 14, 0), "confirmed"],
    [103, 34, 2, dt.datetime(2025, 10, 23), "cancelled"],
    [104, 7, 2, dt.datetime(2025, 10, 24), "cancelled"],
    [105, 7, 2, dt.datetime(2025, 10, 24, 23, 59), "cancelled"],
    [106, 8, 3, dt.datetime(2025, 10, 25), "unknown"],
    [107, 8, 1, dt.datetime(2025, 10, 20, 8, 0), "cancelled"],
]
EXPECTED_REJECTIONS = [
    ["doctors", 5, None, ["invalid_doctor_id"]],
    ["doctors", 6, 5, ["missing_name"]],
    ["appointments", 9, None, ["invalid_booking_id"]],
    ["appointments", 10, 108, ["missing_patient_id"]],
    ["appointments", 11, 109, ["unknown_doctor"]],
    ["appointments", 12, 110, ["invalid_booking_date"]],
    ["appointments", 13, 111, ["booking_date_out_of_range"]],
    ["appointments", 14, 112, ["missing_booking_date"]],
    ["appointments", 15, 101, ["duplicate_row"]],
    ["appointments", 16, 102, ["duplicate_booking_id"]],
    ["appointments", 17, 113, ["invalid_doctor_id"]],
]


def etl_args(doctors, appointments, *extra):
    return ["etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF, *extra]


def test_etl_loads_exactly_the_valid_rows(run_cli, sample_inputs, db_config, tmp_path):
    doctors, appointments = sample_inputs
    assert run_cli(*etl_args(doctors, appointments)) == 0

    assert fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id") == EXPECTED_DOCTORS
    assert fetch(db_config, "SELECT id, patient_id, doctor_id, booking_date, status FROM healthtech.appointments "
                            "ORDER BY id") == EXPECTED_APPOINTMENTS
    rejections = fetch(db_config, "SELECT entity, row_number, record_id, reasons, raw, source_file, run_id "
                                  "FROM healthtech.etl_rejections ORDER BY entity DESC, row_number")
    assert [row[:4] for row in rejections] == EXPECTED_REJECTIONS
    assert rejections[2][4] == {"booking_id": "37X", "patient_id": "9", "doctor_id": "1",
                                "booking_date": "10/21/2025", "status": "confirmed"}
    assert {row[5] for row in rejections} == {"doctors.xlsx", "appointments.xlsx"}

    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text())
    assert {row[6] for row in rejections} == {report["run_id"]}
    assert {key: (m["value"], m["status"]) for key, m in report["metrics"].items()} == {
        "id_completeness": (87.5, "critical"),  # 14/16: missing patient (row 10), invalid doctor (row 17)
        "referential_integrity": (93.33, "warning"),  # 14/15 valid doctor ids exist
        "duplicate_rate": (6.25, "warning"),  # 1/16
        "typing_success": (93.33, "critical"),  # 14/15 non-empty dates parsed
        "acceptance_rate": (43.75, "critical"),  # 7/16 appointment rows loaded
    }
    assert report["counts"]["doctors"] == {"read": 5, "loaded": 3, "rejected": 2, "blank_rows_skipped": 0,
        "rows_above_header_skipped": 0, "control_characters_removed": 0, "unreadable_rows": 0}
    assert report["counts"]["appointments"] == {"read": 16, "loaded": 7, "rejected": 9, "blank_rows_skipped": 0,
        "rows_above_header_skipped": 0, "control_characters_removed": 0, "unreadable_rows": 0}
    assert report["rejections"]["invalid_doctor_id"] == 2
    assert report["unknown_status_values"] == {"pending": 1}
    assert report["load_status"] == "succeeded"

    runs = fetch(db_config, "SELECT run_id, status, doctors_sha256, appointments_sha256, counts, metrics, "
                            "finished_at IS NOT NULL FROM healthtech.etl_runs")
    assert len(runs) == 1
    run_id, status, doctors_sha, appointments_sha, counts, metrics, finished = runs[0]
    assert (run_id, status, finished) == (report["run_id"], "succeeded", True)
    assert doctors_sha == hashlib.sha256(doctors.read_bytes()).hexdigest()
    assert appointments_sha == hashlib.sha256(appointments.read_bytes()).hexdigest()
    assert counts["appointments"]["loaded"] == 7 and metrics["duplicate_rate"]["value"] == 6.25

    log_lines = [line for line in (tmp_path / "logs" / "etl_pipeline.log").read_text().splitlines()
                 if "healthtech_etl.rejections" in line]
    assert len(log_lines) == len(EXPECTED_REJECTIONS)
    assert "rejected appointments row=10 id=108 reasons=missing_patient_id" in log_lines[3]
    csv_text = (tmp_path / "reports" / "rejected_rows.csv").read_text()
    assert csv_text.splitlines()[0].startswith("entity,source_file,row_number,record_id,reasons")
    assert len(csv_text.splitlines()) == 1 + len(EXPECTED_REJECTIONS)


def test_logs_carry_no_patient_records(run_cli, sample_inputs, tmp_path):
    doctors, appointments = sample_inputs
    assert run_cli(*etl_args(doctors, appointments)) == 0
    log = (tmp_path / "logs" / "etl_pipeline.log").read_text()
    assert "patient" not in log.replace("missing_patient_id", "")
    assert "10/21/2025" not in log and "Dr. Ana" not in log


def test_running_twice_gives_identical_tables(run_cli, sample_inputs, db_config):
    doctors, appointments = sample_inputs
    assert run_cli(*etl_args(doctors, appointments)) == 0
    first = snapshot(db_config)
    assert run_cli(*etl_args(doctors, appointments, "--allow-older")) == 0  # loaded again, not a no-op
    second = snapshot(db_config)
    assert first["doctors"] == second["doctors"] and first["appointments"] == second["appointments"]
    assert fetch(db_config, "SELECT status, count(*) FROM healthtech.etl_runs GROUP BY status") == [["succeeded", 2]]
    # each run keeps its own audit trail
    assert second["rejections"] == [[2 * len(EXPECTED_REJECTIONS)]]


def test_paths_from_env_and_dotenv(run_cli, sample_inputs, db_config, tmp_path):
    doctors, appointments = sample_inputs
    (tmp_path / ".env").write_text(f"DOCTORS_INPUT={doctors}\n")
    assert run_cli("etl", "--as-of", AS_OF, env={"APPOINTMENTS_INPUT": str(appointments)}) == 0
    assert fetch(db_config, "SELECT count(*) FROM healthtech.appointments") == [[7]]


def test_day_first_and_horizon_flags(run_cli, make_xlsx, db_config):
    doctors = make_xlsx("d.xlsx", DOCTORS_HEADER, DOCTOR_ROWS)
    appointments = make_xlsx("a.xlsx", APPOINTMENTS_HEADER, [(1, 1, 1, "03/04/2025", "confirmed"),
                                                             (2, 1, 1, "2025-11-20", "confirmed")])
    assert run_cli(*etl_args(doctors, appointments, "--day-first", "--horizon-days", "10")) == 0
    assert fetch(db_config, "SELECT id, booking_date FROM healthtech.appointments") == [
        [1, dt.datetime(2025, 4, 3)]]
    assert fetch(db_config, "SELECT reasons FROM healthtech.etl_rejections WHERE entity = 'appointments'") == [
        [["booking_date_out_of_range"]]]
