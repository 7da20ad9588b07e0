"""The AWS chain with a job deployed with ``--LOAD_MODE merge`` (CDK context loadMode=merge):
last month's rows stay, this month's upsert them, the change lands in appointment_history."""

import csv
import datetime as dt
import io
import json
from typing import Any

from awsenv import (
    AS_OF,
    JOB_NAME,
    RAW_BUCKET,
    REPORT_BUCKET,
    REPORT_PREFIX,
    db_count,
    glue_etl,
    lambda_handler,
    load_event,
    put_object,
)
from helpers import APPOINTMENTS_HEADER, fetch, write_xlsx

REQUIRED = ("RAW_BUCKET", "DOCTORS_KEY", "APPOINTMENTS_KEY", "DB_SECRET_ARN", "REPORT_BUCKET", "REPORT_PREFIX")


def upload_event(key: str, version: str) -> dict:
    event = load_event("s3_put.json")
    obj = event["Records"][0]["s3"]["object"]
    obj.update(key=key, versionId=version)
    return event


def test_a_merge_job_keeps_last_month_and_records_the_change(stack: Any, sample_workbooks: tuple, tmp_path) -> None:
    doctors, appointments = sample_workbooks
    versions = {key: put_object(stack.aws.s3, RAW_BUCKET, key, path)
                for key, path in (("raw/clinic-a/2025-10/doctors.xlsx", doctors), ("raw/clinic-a/2025-10/appointments.xlsx", appointments))}
    assert len(lambda_handler.handler(upload_event("raw/clinic-a/2025-10/doctors.xlsx", versions["raw/clinic-a/2025-10/doctors.xlsx"]), None)
               ["started"]) == 1
    october = fetch(stack.db_config, "SELECT id, patient_id, doctor_id, booking_date, status "
                                     "FROM healthtech.appointments ORDER BY id")
    assert len(october) > 250

    # Redeploy the job with --LOAD_MODE merge as its default, as `-c loadMode=merge` does.
    job = stack.aws.glue.get_job(JobName=JOB_NAME)["Job"]
    stack.aws.glue.delete_job(JobName=JOB_NAME)
    stack.aws.glue.create_job(
        Name=JOB_NAME, Role=job["Role"], Command=job["Command"], MaxCapacity=job["MaxCapacity"],
        ExecutionProperty=job["ExecutionProperty"],
        DefaultArguments={**job["DefaultArguments"], "--LOAD_MODE": "merge"},
    )
    # November's export: one October appointment cancelled, one new appointment.
    changed = october[0]
    november = [
        (changed[0], changed[1], changed[2], changed[3], "cancelled" if changed[4] != "cancelled" else "confirmed"),
        (900_001, 34, changed[2], dt.datetime(2025, 11, 20, 9, 0), "confirmed"),
    ]
    path = write_xlsx(tmp_path / "appointments.xlsx", APPOINTMENTS_HEADER, november)
    version = put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/appointments.xlsx", path)
    result = lambda_handler.handler(upload_event("raw/clinic-a/2025-10/appointments.xlsx", version), None)

    (started,) = result["started"]
    assert stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])["status"] == "SUCCEEDED"
    assert [call.exit_code for call in stack.glue.calls] == [0, 0]
    runs = fetch(stack.db_config, "SELECT run_id, mode, status FROM healthtech.etl_runs ORDER BY started_at")
    assert [row[1:] for row in runs] == [["replace", "succeeded"], ["merge", "succeeded"]]
    merge_run = runs[1][0]
    report = json.loads(stack.aws.s3.get_object(
        Bucket=REPORT_BUCKET, Key=f"{REPORT_PREFIX}/clinic-a/2025-10/{merge_run}/quality_report.json")["Body"].read())
    assert report["mode"] == "merge"
    assert report["merge"]["appointments"] == {"inserted": 1, "updated": 1, "unchanged": 0}
    assert report["metrics"]["referential_integrity"]["basis"] == "doctors_in_file_and_database"

    expected = {row[0]: row for row in october}
    expected[changed[0]] = list(november[0])
    expected[900_001] = list(november[1])
    assert fetch(stack.db_config, "SELECT id, patient_id, doctor_id, booking_date, status "
                                  "FROM healthtech.appointments ORDER BY id") == [expected[k] for k in sorted(expected)]
    # History: October's rows as of the replace, then the change and the new booking.
    assert fetch(stack.db_config, "SELECT count(*) FROM healthtech.appointment_history") == [[len(october) + 2]]
    status_changes = stack.aws.s3.get_object(
        Bucket=REPORT_BUCKET, Key=f"{REPORT_PREFIX}/clinic-a/2025-10/{merge_run}/queries/6_status_changes.csv")["Body"].read()
    rows = list(csv.DictReader(io.StringIO(status_changes.decode("utf-8"))))
    assert [[row[name] for name in ("booking_id", "patient_id", "status_before", "status_after")] for row in rows] == [
        [str(changed[0]), str(changed[1]), changed[4], november[0][4]]]


def test_load_mode_argument_defaults_to_replace() -> None:
    argv = ["glue_etl.py"] + [part for name in REQUIRED for part in (f"--{name}", "x")]
    assert glue_etl.parse_args(argv)["LOAD_MODE"] == "replace"
    assert glue_etl.parse_args(argv + ["--LOAD_MODE", "merge"])["LOAD_MODE"] == "merge"


def test_bad_load_mode_is_a_configuration_error_and_loads_nothing(stack: Any, sample_workbooks: tuple,
                                                                   capsys: Any) -> None:
    doctors, appointments = sample_workbooks
    put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/doctors.xlsx", doctors)
    put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/appointments.xlsx", appointments)
    argv = ["glue_etl.py", "--RAW_BUCKET", RAW_BUCKET, "--DOCTORS_KEY", "raw/clinic-a/2025-10/doctors.xlsx", "--APPOINTMENTS_KEY",
            "raw/clinic-a/2025-10/appointments.xlsx", "--DB_SECRET_ARN", stack.secret_arn, "--REPORT_BUCKET", REPORT_BUCKET,
            "--REPORT_PREFIX", REPORT_PREFIX, "--AS_OF", AS_OF, "--DB_SSLMODE", "require", "--LOAD_MODE", "upsert"]

    assert glue_etl.main(argv) == 2

    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "healthtech-etl glue job FAILED (exit 2): the load mode must be one of replace, merge (got 'upsert')")
    assert db_count(stack.db_config, "etl_runs") == 0
