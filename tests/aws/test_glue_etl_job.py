"""glue_job/glue_etl.py on its own: arguments, versions, secrets, TLS bundle, failures.

Runs the script's ``main`` in-process against moto (S3, Secrets Manager, CloudWatch) and the
session's real PostgreSQL; the chain around it is in test_etl_chain.py."""

import csv
import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from awsenv import (
    AS_OF,
    RAW_BUCKET,
    REPORT_BUCKET,
    REPORT_PREFIX,
    db_count,
    db_secret,
    glue_etl,
    metric_values,
    put_object,
    report_keys,
)

REQUIRED = ["--RAW_BUCKET", "--DOCTORS_KEY", "--APPOINTMENTS_KEY", "--DB_SECRET_ARN", "--REPORT_BUCKET",
            "--REPORT_PREFIX"]


@pytest.fixture
def job(aws: Any, db_config: Any, sample_workbooks: tuple) -> Any:
    """Buckets, the sample workbooks and the DB secret; ``job.argv(**overrides)`` builds a command line."""
    for bucket in (RAW_BUCKET, REPORT_BUCKET):
        aws.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    aws.s3.put_bucket_versioning(Bucket=RAW_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    doctors, appointments = sample_workbooks
    aws.versions = {
        "raw/doctors.xlsx": put_object(aws.s3, RAW_BUCKET, "raw/doctors.xlsx", doctors),
        "raw/appointments.xlsx": put_object(aws.s3, RAW_BUCKET, "raw/appointments.xlsx", appointments),
    }
    aws.secret_arn = aws.secrets.create_secret(Name="db", SecretString=json.dumps(db_secret(db_config)))["ARN"]
    aws.db_config = db_config

    def argv(**overrides: str) -> list:
        args = {
            "RAW_BUCKET": RAW_BUCKET, "DOCTORS_KEY": "raw/doctors.xlsx", "APPOINTMENTS_KEY": "raw/appointments.xlsx",
            "DB_SECRET_ARN": aws.secret_arn, "REPORT_BUCKET": REPORT_BUCKET, "REPORT_PREFIX": REPORT_PREFIX,
            "AS_OF": AS_OF,
        }
        args.update(overrides)
        line = ["glue_etl.py"]
        for name, value in args.items():
            if value is not None:
                line += [f"--{name}", value]
        return line

    aws.argv = argv
    return aws


def run_main(argv: list, capsys: pytest.CaptureFixture) -> tuple:
    code = glue_etl.main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def only_report(job: Any, name: str = "quality_report.json") -> Any:
    listing = job.s3.list_objects_v2(Bucket=REPORT_BUCKET, Prefix=f"{REPORT_PREFIX}/")
    keys = [item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(name)]
    assert len(keys) == 1, keys
    body = job.s3.get_object(Bucket=REPORT_BUCKET, Key=keys[0])["Body"].read()
    return json.loads(body) if name.endswith(".json") else body.decode("utf-8")


# --- arguments -------------------------------------------------------------------------------

def test_missing_arguments_are_named_in_one_line() -> None:
    with pytest.raises(glue_etl.JobFailure) as failure:
        glue_etl.parse_args(["glue_etl.py", "--RAW_BUCKET", "b"])

    assert failure.value.exit_code == 2
    assert str(failure.value) == ("bad job arguments: the following arguments are required: --DOCTORS_KEY, "
                                  "--APPOINTMENTS_KEY, --DB_SECRET_ARN, --REPORT_BUCKET, --REPORT_PREFIX")


def test_defaults_and_glue_s_own_arguments_are_ignored() -> None:
    argv = ["glue_etl.py", "--job-bookmark-option", "job-bookmark-disable", "--JOB_RUN_ID", "jr_1",
            "--scriptLocation", "s3://assets/glue_etl.py"]
    for name in REQUIRED:
        argv += [name, name.lower().strip("-")]

    args = glue_etl.parse_args(argv)

    assert args["RAW_BUCKET"] == "raw_bucket" and args["REPORT_PREFIX"] == "report_prefix"
    assert (args["DB_SSLMODE"], args["DB_SSLROOTCERT"], args["AS_OF"], args["TRIGGER_VERSION"]) == ("require", "", "", "")


def test_get_resolved_options_is_used_on_glue_and_asked_only_for_given_optionals(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def get_resolved_options(args: list, options: list) -> dict:
        """Like awsglue's: every option asked for is required, unknown ones are ignored."""
        import argparse

        asked.append(list(options))
        parser = argparse.ArgumentParser()
        for option in options:
            parser.add_argument("--" + option, required=True)
        parsed, _ = parser.parse_known_args(args[1:])
        return vars(parsed)

    awsglue = types.ModuleType("awsglue")
    utils = types.ModuleType("awsglue.utils")
    utils.getResolvedOptions = get_resolved_options
    awsglue.utils = utils
    monkeypatch.setitem(sys.modules, "awsglue", awsglue)
    monkeypatch.setitem(sys.modules, "awsglue.utils", utils)
    argv = ["glue_etl.py", "--JOB_NAME", "healthtech-etl", "--TRIGGER_VERSION", "abc", "--DB_SSLMODE=verify-full"]
    for name in REQUIRED:
        argv += [name, "x"]

    args = glue_etl.parse_args(argv)

    assert asked == [[name.strip("-") for name in REQUIRED] + ["TRIGGER_VERSION", "DB_SSLMODE"]]
    assert args["TRIGGER_VERSION"] == "abc" and args["DB_SSLMODE"] == "verify-full"
    assert args["TRIGGER_KEY"] == "" and args["AS_OF"] == ""
    with pytest.raises(glue_etl.JobFailure, match="bad job arguments"):
        glue_etl.parse_args(["glue_etl.py", "--RAW_BUCKET", "b"])


def test_values_starting_with_a_dash_are_values() -> None:
    argv = ["glue_etl.py", "--TRIGGER_VERSION", "-Xq3.version_id"]
    for name in REQUIRED:
        argv += [name, "x"]

    assert glue_etl.parse_args(argv)["TRIGGER_VERSION"] == "-Xq3.version_id"


@pytest.mark.parametrize("key, trigger_key, trigger_version, expected", [
    ("raw/doctors.xlsx", "raw/doctors.xlsx", "v1", "v1"),
    ("raw/doctors.xlsx", "raw/doctors.xlsx", "null", None),
    ("raw/doctors.xlsx", "raw/doctors.xlsx", "", None),
    ("raw/appointments.xlsx", "raw/doctors.xlsx", "v1", None),  # the other workbook: latest
    ("raw/doctors.xlsx", "", "v1", None),
])
def test_only_the_triggering_object_is_pinned(key: str, trigger_key: str, trigger_version: str, expected: Any) -> None:
    assert glue_etl.pinned_version(key, trigger_key, trigger_version) == expected


def test_metric_data_maps_the_report_to_six_dimensionless_metrics() -> None:
    report = {
        "metrics": {"id_completeness": {"value": 98.5}, "referential_integrity": {"value": 100.0},
                    "duplicate_rate": {"value": 1.25}, "typing_success": {"value": 99.0},
                    "acceptance_rate": {"value": 87.5}},
        "counts": {"doctors": {"loaded": 10, "rejected": 2}, "appointments": {"loaded": 300, "rejected": 7}},
    }

    data = glue_etl.metric_data(report, timestamp=None)

    assert [(d["MetricName"], d["Value"], d["Unit"]) for d in data] == [
        ("IdCompleteness", 98.5, "Percent"), ("ReferentialIntegrity", 100.0, "Percent"),
        ("DuplicateRate", 1.25, "Percent"), ("TypingSuccess", 99.0, "Percent"),
        ("AcceptanceRate", 87.5, "Percent"), ("RowsLoaded", 310.0, "Count"), ("RowsRejected", 9.0, "Count"),
    ]
    assert all("Dimensions" not in d for d in data)


# --- runs --------------------------------------------------------------------------------------

def test_trigger_version_pins_the_exact_object_version(job: Any, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    first = job.versions["raw/doctors.xlsx"]
    # A newer doctors export with a single doctor is uploaded after the one that triggered us.
    newer = openpyxl.Workbook()
    newer.active.append(["doctor_id", "name", "specialty"])
    newer.active.append([1, "Dr. Only One", "cardiology"])
    newer.save(tmp_path / "newer.xlsx")
    put_object(job.s3, RAW_BUCKET, "raw/doctors.xlsx", tmp_path / "newer.xlsx")

    code, err, out = run_main(job.argv(TRIGGER_KEY="raw/doctors.xlsx", TRIGGER_VERSION=first), capsys)

    assert code == 0, err
    report = only_report(job)
    assert report["inputs"]["doctors"]["file"] == f"s3://{RAW_BUCKET}/raw/doctors.xlsx?versionId={first}"
    assert report["counts"]["doctors"]["read"] > 1
    assert db_count(job.db_config, "doctors") == report["counts"]["doctors"]["loaded"]
    assert "[pinned by trigger]" in out


def test_without_trigger_version_the_latest_objects_are_read(job: Any, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    newer = openpyxl.Workbook()
    newer.active.append(["doctor_id", "name", "specialty"])
    newer.active.append([1, "Dr. Only One", "cardiology"])
    newer.save(tmp_path / "newer.xlsx")
    latest = put_object(job.s3, RAW_BUCKET, "raw/doctors.xlsx", tmp_path / "newer.xlsx")

    code, err, _ = run_main(job.argv(TRIGGER_KEY="raw/doctors.xlsx", TRIGGER_VERSION="null"), capsys)

    assert code == 0, err
    report = only_report(job)
    assert report["inputs"]["doctors"]["file"].endswith(f"?versionId={latest}")
    assert report["counts"]["doctors"]["read"] == 1


def test_logs_are_json_lines_without_the_password(job: Any, capsys: pytest.CaptureFixture) -> None:
    secret = db_secret(job.db_config)
    code, err, out = run_main(job.argv(), capsys)

    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["logger"] for line in lines} >= {"healthtech_etl.glue_job", "healthtech_etl.pipeline"}
    assert lines[-1]["message"].startswith("ETL job succeeded: ")
    assert secret["password"] not in out and secret["password"] not in "".join(err)
    assert sorted(metric_values(job)) == sorted(
        ["IdCompleteness", "ReferentialIntegrity", "DuplicateRate", "TypingSuccess", "AcceptanceRate", "RowsLoaded",
         "RowsRejected"])


def test_rejected_rows_csv_in_s3_is_formula_escaped(job: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doctors = openpyxl.Workbook()
    doctors.active.append(["doctor_id", "name", "specialty"])
    doctors.active.append([1, "Dr. Ana", "cardiology"])
    # Text cells a spreadsheet would run as formulas; the invalid id gets the row rejected.
    doctors.active.append(["+49 30 1234", "@cmd|' /C calc'!A0", "-2+3"])
    doctors.save(tmp_path / "doctors.xlsx")
    put_object(job.s3, RAW_BUCKET, "raw/doctors.xlsx", tmp_path / "doctors.xlsx")

    code, err, _ = run_main(job.argv(), capsys)

    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(only_report(job, "rejected_rows.csv"))))
    doctor_rows = [row for row in rows if row["entity"] == "doctors"]
    assert len(doctor_rows) == 1
    values = set(doctor_rows[0].values())
    assert {"'@cmd|' /C calc'!A0", "'-2+3"} <= values
    assert not any(value.startswith(("=", "+", "@")) for row in rows for value in row.values() if value)


def test_missing_secret_fails_before_touching_anything(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(DB_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:123456789012:secret:nope"),
                            capsys)

    assert code == 2
    assert err[-1] == ("healthtech-etl glue job FAILED (exit 2): database secret "
                       "arn:aws:secretsmanager:eu-west-1:123456789012:secret:nope not found in Secrets Manager")
    assert db_count(job.db_config, "etl_runs") == 0
    assert job.s3.list_objects_v2(Bucket=REPORT_BUCKET).get("KeyCount") == 0


@pytest.mark.parametrize("secret, message", [
    ("not json", "is not a JSON object"),
    (json.dumps({"username": "u", "host": "h"}), "database secret lacks password"),
    (json.dumps({"username": "u", "password": "p", "host": "h", "engine": "mysql"}), "not PostgreSQL"),
])
def test_unusable_secrets_are_configuration_errors(job: Any, capsys: pytest.CaptureFixture, secret: str,
                                                   message: str) -> None:
    arn = job.secrets.create_secret(Name="broken", SecretString=secret)["ARN"]

    code, err, _ = run_main(job.argv(DB_SECRET_ARN=arn), capsys)

    assert code == 2 and message in err[-1]


def test_unreachable_database_is_a_database_error_without_the_password(job: Any, capsys: pytest.CaptureFixture) -> None:
    secret = {**db_secret(job.db_config), "host": "/nonexistent/socket/dir", "password": "s3cr3t-Pa55"}
    arn = job.secrets.create_secret(Name="elsewhere", SecretString=json.dumps(secret))["ARN"]

    code, err, out = run_main(job.argv(DB_SECRET_ARN=arn), capsys)

    assert code == 4
    assert "cannot connect to PostgreSQL" in err[-1] and "/nonexistent/socket/dir" in err[-1]
    assert "s3cr3t-Pa55" not in out + "".join(err)


def test_missing_workbook_is_an_input_error(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(APPOINTMENTS_KEY="raw/nope.xlsx"), capsys)

    assert code == 3
    assert err[-1].endswith(f"input workbook s3://{RAW_BUCKET}/raw/nope.xlsx not found (NoSuchKey)")
    assert db_count(job.db_config, "etl_runs") == 0


def test_unknown_trigger_version_is_an_input_error(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(TRIGGER_KEY="raw/doctors.xlsx", TRIGGER_VERSION="no-such-version"), capsys)

    assert code == 3 and "(version no-such-version) not found" in err[-1]


def test_bad_as_of_is_a_configuration_error(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(AS_OF="01/11/2025"), capsys)

    assert code == 2 and "--AS_OF must be YYYY-MM-DD" in err[-1]


def test_report_publication_failure_says_the_data_was_loaded(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(REPORT_BUCKET="no-such-report-bucket"), capsys)

    assert code == glue_etl.EXIT_PUBLISH_FAILED
    assert "WAS loaded" in err[-1] and "NoSuchBucket" in err[-1]
    assert db_count(job.db_config, "appointments") > 0


def test_ca_bundle_from_s3_is_downloaded(job: Any, tmp_path: Path) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    job.s3.put_object(Bucket=RAW_BUCKET, Key="certs/rds-global-bundle.pem", Body=pem)

    path = glue_etl.resolve_ca_bundle(job.s3, f"s3://{RAW_BUCKET}/certs/rds-global-bundle.pem", tmp_path)

    assert Path(path).read_bytes() == pem
    assert glue_etl.resolve_ca_bundle(job.s3, "", tmp_path) is None
    for bad in (f"s3://{RAW_BUCKET}/certs/missing.pem", "s3://just-a-bucket", str(tmp_path / "missing.pem")):
        with pytest.raises(glue_etl.JobFailure) as failure:
            glue_etl.resolve_ca_bundle(job.s3, bad, tmp_path)
        assert failure.value.exit_code == 2


def test_verify_full_without_a_ca_bundle_is_refused(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(DB_SSLMODE="verify-full"), capsys)

    assert code == 2 and "needs a CA bundle" in err[-1]


def test_quality_report_keys_are_under_prefix_and_run_id(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(REPORT_PREFIX="/nested/reports/"), capsys)

    assert code == 0, err
    listing = job.s3.list_objects_v2(Bucket=REPORT_BUCKET)["Contents"]
    (report_key,) = [item["Key"] for item in listing if item["Key"].endswith("quality_report.json")]
    run_id = report_key.split("/")[2]
    assert report_key == f"nested/reports/{run_id}/quality_report.json"
    assert len(report_keys(job, run_id)) == 0  # nothing under the default prefix


def test_report_not_written_after_the_commit_is_exit_6(job: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The same meaning as the local CLI's exit 6: committed, so the run succeeded, but no report."""
    import contextlib

    from healthtech_etl import pipeline

    work_dir = tmp_path / "work"
    work_dir.mkdir()
    monkeypatch.setattr(glue_etl.tempfile, "TemporaryDirectory", lambda **_: contextlib.nullcontext(str(work_dir)))
    real_load_run = pipeline.load_run

    def load_then_block(*args: Any, **kwargs: Any) -> None:
        real_load_run(*args, **kwargs)
        report_dir = work_dir / "report"
        report_dir.rename(work_dir / "moved")
        report_dir.write_text("a file where the report dir was")  # a real ENOTDIR for the report write

    monkeypatch.setattr(pipeline, "load_run", load_then_block)
    code, err, _ = run_main(job.argv(), capsys)

    assert code == glue_etl.EXIT_PUBLISH_FAILED
    assert "succeeded (data loaded and committed), but its report was not published" in err[-1]
    assert db_count(job.db_config, "appointments") > 0
