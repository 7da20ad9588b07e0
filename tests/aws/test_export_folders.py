"""The AWS chain by export folder: a pair loads when both workbooks are there, whatever their order
and delay; a lone workbook raises ExportsMissingPartner; a failed run is re-run (infra/rerun.py)
and loads; two clinics' uploads never claim each other's runs."""

import datetime
import json
import sys
from typing import Any

import moto_patches
import pytest
from awsenv import JOB_NAME, RAW_BUCKET, REPO, db_count, executions, lambda_handler, load_event, put_object

sys.path.insert(0, str(REPO / "infra"))
import rerun as rerun_script  # noqa: E402 - infra/rerun.py, the `make rerun` command


def upload(stack: Any, key: str, path: Any, sequencer: str) -> dict:
    """Put the workbook, then deliver its S3 event to the trigger; the trigger's result."""
    version = put_object(stack.aws.s3, RAW_BUCKET, key, path)
    event = load_event("s3_put.json")
    event["Records"][0]["s3"]["object"].update(key=key, versionId=version, sequencer=sequencer)
    return lambda_handler.handler(event, None)


def statuses(stack: Any) -> list:
    return sorted(item["status"] for item in executions(stack.aws, stack.state_machine_arn))


def job_runs(stack: Any) -> list:
    return stack.aws.glue.get_job_runs(JobName=JOB_NAME)["JobRuns"]


def missing_partner_count(stack: Any) -> float:
    now = datetime.datetime.now(datetime.timezone.utc)
    points = stack.aws.cloudwatch.get_metric_statistics(
        Namespace="HealthTechETL", MetricName="ExportsMissingPartner", StartTime=now - datetime.timedelta(hours=1),
        EndTime=now + datetime.timedelta(minutes=5), Period=3600, Statistics=["Sum"])["Datapoints"]
    return sum(point["Sum"] for point in points)


@pytest.mark.parametrize("first", ["doctors.xlsx", "appointments.xlsx"])
def test_the_partner_arriving_during_the_wait_loads_the_pair_once(
    stack: Any, sample_workbooks: tuple, first: str
) -> None:
    folder = "raw/clinic-a/2025-11/"
    paths = dict(zip(("doctors.xlsx", "appointments.xlsx"), sample_workbooks))
    second = next(name for name in paths if name != first)

    def partner_arrives(seconds: float) -> None:  # one-shot, while the first execution waits
        moto_patches.ON_WAIT.remove(partner_arrives)
        upload(stack, folder + second.upper(), paths[second], "0065B0000000000002")

    moto_patches.WAIT_SLEEPS.clear()
    moto_patches.ON_WAIT.append(partner_arrives)
    try:
        upload(stack, folder + first, paths[first], "0065B0000000000001")
    finally:
        if partner_arrives in moto_patches.ON_WAIT:
            moto_patches.ON_WAIT.remove(partner_arrives)

    assert moto_patches.WAIT_SLEEPS == [1.0]  # only the lone first workbook's execution waited
    assert statuses(stack) == ["SUCCEEDED", "SUCCEEDED"]  # the partner's loads, the first's finds it claimed
    (run,) = job_runs(stack)
    assert run["JobRunState"] == "SUCCEEDED" and run["Arguments"]["--export_date"] == "2025-11-01"
    assert sorted(r["action"] for r in stack.resolver.resolved) == ["run", "skip", "wait"]
    assert db_count(stack.db_config, "etl_runs") == 1 and missing_partner_count(stack) == 0
    assert stack.alerts() == []


def test_a_lone_workbook_raises_the_metric_and_a_late_partner_still_loads(
    stack: Any, sample_workbooks: tuple
) -> None:
    doctors, appointments = sample_workbooks
    folder = "raw/clinic-9/2025-10/"

    upload(stack, folder + "doctors.xlsx", doctors, "0065B0000000000006")

    (lone,) = executions(stack.aws, stack.state_machine_arn)
    described = stack.aws.sfn.describe_execution(executionArn=lone["executionArn"])
    assert described["status"] == "FAILED" and described["error"] == "ExportMissingPartner"
    assert missing_partner_count(stack) == 1 and job_runs(stack) == []
    # The partner, hours later: its own upload loads the pair.
    upload(stack, folder + "appointments.xlsx", appointments, "0065B0000000000007")
    assert statuses(stack) == ["FAILED", "SUCCEEDED"]
    (run,) = job_runs(stack)
    assert run["JobRunState"] == "SUCCEEDED" and run["Arguments"]["--source"] == "clinic-9"


def test_a_failed_run_is_rerun_and_loads(stack: Any, sample_workbooks: tuple, capsys: Any) -> None:
    doctors, appointments = sample_workbooks
    good_secret = stack.aws.secrets.get_secret_value(SecretId=stack.secret_arn)["SecretString"]
    stack.aws.secrets.put_secret_value(SecretId=stack.secret_arn, SecretString="not json")  # a broken deploy
    put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/doctors.xlsx", doctors)
    result = upload(stack, "raw/clinic-a/2025-10/appointments.xlsx", appointments, "0065B0000000000008")
    (started,) = result["started"]
    assert stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])["status"] == "FAILED"
    assert db_count(stack.db_config, "etl_runs") == 0
    # Starting the same input again is no longer "NothingToLoad": the failed run released its pair.
    assert stack.aws.s3.list_objects_v2(Bucket=stack.default_arguments["--REPORT_BUCKET"],
                                        Prefix="runs/claims/").get("KeyCount", 0) == 0

    stack.aws.secrets.put_secret_value(SecretId=stack.secret_arn, SecretString=good_secret)  # fixed
    assert rerun_script.main([started["execution_arn"]]) == 0

    out = capsys.readouterr().out.splitlines()
    new_arn = out[-2].removeprefix("started ")
    described = stack.aws.sfn.describe_execution(executionArn=new_arn)
    assert described["status"] == "SUCCEEDED" and described["name"].startswith("rerun-etl-appointments-")
    assert json.loads(described["input"])["rerun_of"] == started["execution_arn"]
    assert [run["JobRunState"] for run in job_runs(stack)] == ["FAILED", "SUCCEEDED"]
    assert db_count(stack.db_config, "etl_runs") == 1
    assert out[-1].startswith("console: https://eu-west-1.console.aws.amazon.com/states/home")


@pytest.mark.parametrize(("arn", "status", "message"), [
    ("", None, "give the failed execution's ARN"),
    ("arn:aws:states:eu-west-1:123:execution:x", None, "is not a Step Functions execution ARN"),
    ("succeeded", "SUCCEEDED", "only a FAILED, TIMED_OUT, ABORTED execution is re-run"),
])
def test_rerun_refuses_what_is_not_a_failed_execution(
    stack: Any, sample_workbooks: tuple, capsys: Any, arn: str, status: Any, message: str
) -> None:
    if status:
        doctors, appointments = sample_workbooks
        put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/doctors.xlsx", doctors)
        arn = upload(stack, "raw/clinic-a/2025-10/appointments.xlsx", appointments, "0065B0000000000009")[
            "started"][0]["execution_arn"]
    assert rerun_script.main([arn]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("rerun: ") and message in line


def test_two_clinics_never_claim_each_others_runs(stack: Any, sample_workbooks: tuple) -> None:
    doctors, appointments = sample_workbooks  # the very same bytes, uploaded by two clinics
    for clinic in ("clinic-a", "clinic-b"):
        put_object(stack.aws.s3, RAW_BUCKET, f"raw/{clinic}/2025-10/doctors.xlsx", doctors)
        upload(stack, f"raw/{clinic}/2025-10/appointments.xlsx", appointments, f"0065B00000000000{clinic[-1]}0")

    assert statuses(stack) == ["SUCCEEDED", "SUCCEEDED"]
    assert sorted(run["Arguments"]["--source"] for run in job_runs(stack)) == ["clinic-a", "clinic-b"]
    assert [r["action"] for r in stack.resolver.resolved] == ["run", "run"]
