"""glue_job/glue_etl.py on its own: arguments, versions, secrets, verified TLS, failures.

Job runs execute the script as Glue's launcher does (tests/aws/glue_launcher.py: ``__main__``
via runpy, the job arguments in ``sys.argv``, the exit code from ``sys.exit``) in-process
against moto (S3, Secrets Manager, CloudWatch) and a real PostgreSQL: the session's (unix
socket) or a TLS-only one with a test CA (tests/tls_postgres.py). In the compat lane
(scripts/test-compat.sh) the package, python-calamine and packaging come from their wheels, each
installed with ``pip install --no-index --target``, that directory on ``sys.path``, as on Glue.
The chain around the job is in test_etl_chain.py."""

import csv
import io
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import glue_launcher
import openpyxl
import pytest
import tls_postgres
from awsenv import (
    AS_OF,
    RAW_BUCKET,
    REPO,
    REPORT_BUCKET,
    REPORT_PREFIX,
    db_count,
    db_secret,
    glue_etl,
    metric_values,
    put_object,
    report_keys,
)

from healthtech_etl.db import connect

SCRIPT = REPO / "glue_job" / "glue_etl.py"

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
            # The session's server is on a unix socket, where TLS does not apply; verified TLS
            # (the default) is tested against the TLS server below.
            "DB_SSLMODE": "require",
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
    """One job run, launched as Glue launches it; (exit code, stderr lines, stdout)."""
    code = glue_launcher.run_script(SCRIPT, argv[1:])
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


def test_a_missing_reader_wheel_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "python_calamine", None)  # as without its wheel in --extra-py-files

    assert glue_etl.main(["glue_etl.py"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("healthtech-etl glue job FAILED (exit 1): the healthtech_etl package or python-calamine "
                           "is not installed")
    assert last.endswith("pass their wheels (and packaging's) in --extra-py-files")


def test_defaults_and_glue_s_own_arguments_are_ignored() -> None:
    argv = ["glue_etl.py", "--job-bookmark-option", "job-bookmark-disable", "--JOB_RUN_ID", "jr_1",
            "--scriptLocation", "s3://assets/glue_etl.py"]
    for name in REQUIRED:
        argv += [name, name.lower().strip("-")]

    args = glue_etl.parse_args(argv)

    assert args["RAW_BUCKET"] == "raw_bucket" and args["REPORT_PREFIX"] == "report_prefix"
    assert (args["DB_SSLMODE"], args["DB_SSLROOTCERT"], args["AS_OF"], args["TRIGGER_VERSION"]) == ("verify-full", "", "", "")


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


@pytest.mark.parametrize("sslmode", [None, "verify-full", "verify-ca"])
def test_verification_without_a_ca_bundle_is_refused_before_anything_is_read(
        job: Any, capsys: pytest.CaptureFixture, sslmode: Any) -> None:
    code, err, _ = run_main(job.argv(DB_SSLMODE=sslmode), capsys)  # None: the default, verify-full

    assert code == 2
    assert err[-1].endswith(f"bad job arguments: --DB_SSLMODE {sslmode or 'verify-full'} needs a CA bundle: pass "
                            "--DB_SSLROOTCERT s3://bucket/key or a local path (or --DB_SSLMODE require, unverified)")
    assert db_count(job.db_config, "etl_runs") == 0


# --- verified TLS (a TLS-only PostgreSQL whose certificate names "localhost") ------------------

@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    trustme = pytest.importorskip("trustme")
    bindir = tls_postgres.require_bindir()
    server = tls_postgres.start(tmp_path_factory.mktemp("tls-pg"), trustme.CA(), bindir)
    server.other_ca = tmp_path_factory.mktemp("other-ca") / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(server.other_ca))
    yield server
    server.stop()


@pytest.fixture
def tls_job(job: Any, tls_server: Any) -> Any:
    """The job's secret points at a fresh database on the TLS server (host "localhost"); the
    right and a wrong CA bundle are in the artifacts bucket, as the stack deploys the RDS one."""
    database = tls_postgres.create_database(tls_server)
    secret = {"engine": "postgres", "host": "localhost", "port": tls_server.port, "username": "postgres",
              "password": "unused-by-trust-auth", "dbname": database}
    job.tls_secret = lambda **changes: job.secrets.create_secret(
        Name=f"tls-{len(changes)}-{'-'.join(map(str, changes.values()))}",
        SecretString=json.dumps({**secret, **changes}))["ARN"]
    job.s3.create_bucket(Bucket="artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    job.s3.put_object(Bucket="artifacts", Key="glue/rds-ca-bundle.pem", Body=tls_server.ca_file.read_bytes())
    job.s3.put_object(Bucket="artifacts", Key="glue/other-ca.pem", Body=tls_server.other_ca.read_bytes())
    from healthtech_etl.db import DbConfig

    job.tls_db = DbConfig.from_url(tls_server.url(database))
    return job


def test_default_verify_full_loads_with_the_ca_bundle_from_s3(tls_job: Any, capsys: pytest.CaptureFixture) -> None:
    argv = tls_job.argv(DB_SSLMODE=None, DB_SECRET_ARN=tls_job.tls_secret(),
                        DB_SSLROOTCERT="s3://artifacts/glue/rds-ca-bundle.pem")

    code, err, out = run_main(argv, capsys)

    assert code == 0, err
    assert "sslmode=verify-full" in out
    report = only_report(tls_job)
    assert db_count(tls_job.tls_db, "appointments") == report["counts"]["appointments"]["loaded"] > 0


@pytest.mark.parametrize("host, bundle, problem", [
    ("localhost", "glue/other-ca.pem", "unable to get local issuer certificate"),  # not RDS's CA
    ("127.0.0.1", "glue/rds-ca-bundle.pem", "mismatch, certificate is not valid for '127.0.0.1'"),  # wrong name
])
def test_an_unverifiable_server_is_a_database_error_and_nothing_is_loaded(
        tls_job: Any, capsys: pytest.CaptureFixture, host: str, bundle: str, problem: str) -> None:
    argv = tls_job.argv(DB_SSLMODE=None, DB_SECRET_ARN=tls_job.tls_secret(host=host),
                        DB_SSLROOTCERT=f"s3://artifacts/{bundle}")

    code, err, _ = run_main(argv, capsys)

    assert code == 4
    assert err[-1].startswith(f"healthtech-etl glue job FAILED (exit 4): cannot connect to PostgreSQL at postgres@{host}:")
    assert "certificate verify failed" in err[-1] and problem in err[-1]
    assert db_count(tls_job.tls_db, "etl_runs") == 0


def test_an_unreadable_ca_bundle_in_s3_is_a_configuration_error(tls_job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(tls_job.argv(DB_SSLMODE=None, DB_SECRET_ARN=tls_job.tls_secret(),
                                         DB_SSLROOTCERT="s3://artifacts/glue/missing.pem"), capsys)

    assert code == 2 and err[-1].endswith("cannot download CA bundle s3://artifacts/glue/missing.pem: 404")


def test_quality_report_keys_are_under_prefix_and_run_id(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(REPORT_PREFIX="/nested/reports/"), capsys)

    assert code == 0, err
    listing = job.s3.list_objects_v2(Bucket=REPORT_BUCKET)["Contents"]
    (report_key,) = [item["Key"] for item in listing if item["Key"].endswith("quality_report.json")]
    run_id = report_key.split("/")[3]  # <prefix>/<source>/<run_id>/: no --export given
    assert report_key == f"nested/reports/default/{run_id}/quality_report.json"
    assert len(report_keys(job, run_id)) == 0  # nothing under the default prefix


# --- the HTML report -------------------------------------------------------------------------

def test_html_report_is_uploaded_beside_the_json(job: Any, capsys: pytest.CaptureFixture) -> None:
    code, err, _ = run_main(job.argv(), capsys)

    assert code == 0, err
    report = only_report(job)
    key = f"{REPORT_PREFIX}/default/{report['run_id']}/quality_report.html"
    page = job.s3.get_object(Bucket=REPORT_BUCKET, Key=key)
    assert page["ContentType"] == "text/html; charset=utf-8"
    text = page["Body"].read().decode("utf-8")
    assert f"run {report['run_id']}" in text and 'data-charts-expected="6"' in text


def test_a_failed_load_links_its_html_report(job: Any, capsys: pytest.CaptureFixture) -> None:
    # A real fault in the database: a doctors table that refuses every row (the load's COPY fails).
    connection = connect(job.db_config)
    try:
        connection.run("CREATE SCHEMA healthtech")
        connection.run("CREATE TABLE healthtech.doctors (id bigint PRIMARY KEY, name text NOT NULL, "
                       "specialty text, CHECK (id < 0))")
    finally:
        connection.close()

    code, err, _ = run_main(job.argv(), capsys)

    assert code == 4
    report = only_report(job)
    assert report["load_status"] == "failed"
    link = f"s3://{REPORT_BUCKET}/{REPORT_PREFIX}/default/{report['run_id']}/quality_report.html"
    assert err[-1].startswith("healthtech-etl glue job FAILED (exit 4): load failed and was rolled back")
    assert err[-1].endswith(f"(report: {link})")
    assert "the load failed and was rolled back" in only_report(job, "quality_report.html")
    assert db_count(job.db_config, "appointments") == 0


def test_report_not_written_after_the_commit_is_exit_6(job: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    """The same meaning as the local CLI's exit 6: committed, so the run succeeded, but no report."""
    import contextlib

    from healthtech_etl import pipeline

    work_dir = tmp_path / "work"
    work_dir.mkdir()
    monkeypatch.setattr(glue_etl.tempfile, "TemporaryDirectory", lambda **_: contextlib.nullcontext(str(work_dir)))
    real_load_run = pipeline.load_run

    def load_then_block(*args: Any, **kwargs: Any) -> Any:
        changes = real_load_run(*args, **kwargs)
        report_dir = work_dir / "report"
        report_dir.rename(work_dir / "moved")
        report_dir.write_text("a file where the report dir was")  # a real ENOTDIR for the report write
        return changes

    monkeypatch.setattr(pipeline, "load_run", load_then_block)
    code, err, _ = run_main(job.argv(), capsys)

    assert code == glue_etl.EXIT_PUBLISH_FAILED
    assert "succeeded (data loaded and committed), but its report was not published" in err[-1]
    assert db_count(job.db_config, "appointments") > 0
