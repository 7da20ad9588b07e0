"""glue_job/db_access.py, launched as Glue launches it, against moto (Secrets Manager, S3) and the
session's real PostgreSQL: the setup task creates the roles from their secrets, the ETL loads as
its own role, the ops task answers `runs` and `report` as the reader into S3."""

import json
import uuid
from contextlib import closing
from dataclasses import replace
from typing import Any

import glue_launcher
import pytest
from awsenv import AS_OF, REPO, REPORT_BUCKET, db_secret

from healthtech_etl import cli
from healthtech_etl.db import DbConfig, connect

SCRIPT = REPO / "glue_job" / "db_access.py"


@pytest.fixture
def access(aws: Any, db_config: DbConfig) -> Any:
    """The three secrets of a stack (master = the test server's administrator) and the bucket."""
    aws.s3.create_bucket(Bucket=REPORT_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    tag = uuid.uuid4().hex[:8]
    arns = {}
    for kind, user in (("MASTER", db_config.user), ("ETL", f"t_etl_{tag}"), ("READER", f"t_reader_{tag}")):
        secret = {**db_secret(db_config), "username": user, "password": f"{kind.lower()}-{tag}-pw"}
        arns[kind] = aws.secrets.create_secret(Name=f"db-{kind.lower()}", SecretString=json.dumps(secret))["ARN"]
    aws.arns, aws.etl_role, aws.reader_role = arns, f"t_etl_{tag}", f"t_reader_{tag}"
    yield aws
    with closing(connect(db_config)) as admin:
        for role in (aws.etl_role, aws.reader_role):
            if admin.run("SELECT 1 FROM pg_roles WHERE rolname = :n", n=role):
                admin.run(f'DROP OWNED BY "{role}" CASCADE; DROP ROLE "{role}"')


def launch(capsys: pytest.CaptureFixture, *args: str) -> tuple:
    code = glue_launcher.run_script(SCRIPT, ["--DB_SSLMODE", "require", *args])  # unix socket: no TLS
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def setup_args(access: Any) -> list:
    return ["--TASK", "setup", "--MASTER_SECRET_ARN", access.arns["MASTER"],
            "--ETL_SECRET_ARN", access.arns["ETL"], "--READER_SECRET_ARN", access.arns["READER"]]


def ops(access: Any, capsys: pytest.CaptureFixture, command: str, prefix: str) -> tuple:
    return launch(capsys, "--TASK", "ops", "--READER_SECRET_ARN", access.arns["READER"], "--REPORT_BUCKET",
                  REPORT_BUCKET, "--OPS_PREFIX", prefix, "--OPS_COMMAND", command)


def s3_text(access: Any, key: str) -> str:
    return access.s3.get_object(Bucket=REPORT_BUCKET, Key=key)["Body"].read().decode("utf-8")


def test_setup_then_etl_as_its_role_then_ops_as_reader(access, db_config, sample_workbooks, monkeypatch, capsys,
                                                       tmp_path):
    code, err, out = launch(capsys, *setup_args(access), "--SETUP_VERSION", "v1")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["etl_role"], summary["reader_role"], summary["version"]) == (access.etl_role, access.reader_role,
                                                                                 "v1")
    assert "-pw" not in out + "\n".join(err)
    # Twice is fine (a redeploy with a new version runs it again).
    assert launch(capsys, *setup_args(access))[0] == 0

    # The ETL logs in as its own role (the secret the ETL job reads).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", replace(db_config, user=access.etl_role).url())
    doctors, appointments = sample_workbooks
    assert cli.main(["etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF]) == 0
    capsys.readouterr()
    run_id = _latest_run(db_config)

    code, err, out = ops(access, capsys, "runs --limit 5", "reports/ops/t1")
    assert code == 0, err
    assert run_id in s3_text(access, "reports/ops/t1/output.txt")
    assert json.loads(out.strip().splitlines()[-1])["output"] == f"s3://{REPORT_BUCKET}/reports/ops/t1/"

    code, err, _ = ops(access, capsys, f"report --run-id {run_id}", "reports/ops/t2")
    assert code == 0, err
    assert "<html" in s3_text(access, f"reports/ops/t2/{run_id}/quality_report.html").lower()


def _latest_run(db_config: DbConfig) -> str:
    with closing(connect(db_config)) as connection:
        rows = connection.run("SELECT run_id FROM healthtech.etl_runs ORDER BY started_at DESC LIMIT 1")
    assert rows, "the ETL recorded no run"
    return rows[0][0]


@pytest.mark.parametrize("command", ["etl --doctors x", "runs --bogus", "", "rm -rf /"])
def test_ops_refuses_anything_but_the_read_only_commands(access, capsys, command):
    code, err, _ = ops(access, capsys, command, "reports/ops/x")
    assert code == 2
    assert "bad --OPS_COMMAND" in err[-1] or "bad job arguments" in err[-1]


def test_setup_failures_are_one_line_with_their_exit_code(access, capsys):
    code, err, _ = launch(capsys, "--TASK", "setup", "--MASTER_SECRET_ARN", access.arns["MASTER"])
    assert (code, err[-1].split(": ", 1)[-1]) == (2, "bad job arguments: --TASK setup needs --ETL_SECRET_ARN, "
                                                     "--READER_SECRET_ARN")
    missing = access.arns["ETL"][:-6] + "nosuch"
    code, err, _ = launch(capsys, "--TASK", "setup", "--MASTER_SECRET_ARN", access.arns["MASTER"],
                          "--ETL_SECRET_ARN", missing, "--READER_SECRET_ARN", access.arns["READER"])
    assert code == 2 and "cannot read database secret" in err[-1] and "ResourceNotFoundException" in err[-1]
    assert len(err) == 1 or err[-1].startswith("healthtech-etl db access job FAILED (exit 2)")


# --- scripts/db_access.py: what `make db-setup` / `make ops` run on an operator's machine -------------


def operator_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("db_access_operator", REPO / "scripts" / "db_access.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("context, env", [([], "dev"), (["-c", "env=prod"], "prod"), (["--context=env=Stage"], "stage"),
                                          (["-c", "env=prod", "-c", "alertEmail=a@b.c", "-c", "env=qa"], "qa")])
def test_operator_script_picks_the_env_as_cdk_sh_does(context, env):
    assert operator_script().parse(["ops", "runs", *context]).env == env


def test_operator_script_runs_ops_and_prints_its_output(aws, capsys):
    script = operator_script()
    aws.s3.create_bucket(Bucket=REPORT_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    aws.glue.create_job(Name="healthtech-etl-prod-ops", Role="arn:aws:iam::123456789012:role/ops",
                        Command={"Name": "pythonshell", "ScriptLocation": "s3://x/glue/db_access.py"},
                        DefaultArguments={"--TASK": "ops", "--REPORT_BUCKET": REPORT_BUCKET})
    # What the job writes (moto's Glue runs nothing and ends every run SUCCEEDED).
    aws.s3.put_object(Bucket=REPORT_BUCKET, Key="reports/ops/t9/output.txt", Body=b"run id  started\nabc  2025\n")
    code = script.main(["ops", "runs --limit 3", "-c", "env=prod", "--run-name", "t9", "--poll-seconds", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == "run id  started\nabc  2025\n"
    assert f"s3://{REPORT_BUCKET}/reports/ops/t9/output.txt" in captured.err
    (job_run,) = aws.glue.get_job_runs(JobName="healthtech-etl-prod-ops")["JobRuns"]
    assert {k: job_run["Arguments"][k] for k in ("--OPS_COMMAND", "--OPS_PREFIX", "--TASK")} == {
        "--OPS_COMMAND": "runs --limit 3", "--OPS_PREFIX": "reports/ops/t9", "--TASK": "ops"}

    # A stack that is not there: one line, exit 1.
    assert script.main(["db-setup", "-c", "env=qa", "--poll-seconds", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("db_access: db-setup on env qa: EntityNotFoundException")
