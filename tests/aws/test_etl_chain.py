"""The whole AWS chain offline: S3 event -> Lambda -> Step Functions (the deployed definition)
-> Glue job run (the real script) -> PostgreSQL + S3 report + CloudWatch metrics; and the
failure paths (Catch -> SNS alert, retry on concurrent runs, database left as it was)."""

import json
from typing import Any

import moto_patches
import pytest
from awsenv import (
    ACCOUNT,
    JOB_NAME,
    METRIC_NAMES,
    RAW_BUCKET,
    REGION,
    REPORT_BUCKET,
    REPORT_PREFIX,
    asl,
    db_count,
    executions,
    history,
    lambda_handler,
    load_event,
    metric_values,
    put_object,
    report_keys,
)


@pytest.fixture
def uploaded(stack: Any, sample_workbooks: tuple) -> dict:
    """The sample exports in the raw bucket; ``{key: version id}``."""
    doctors, appointments = sample_workbooks
    return {
        "raw/clinic-a/2025-10/doctors.xlsx": put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/doctors.xlsx", doctors),
        "raw/clinic-a/2025-10/appointments.xlsx": put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/appointments.xlsx", appointments),
    }


def run_event(stack: Any, event_file: str, versions: dict) -> dict:
    return lambda_handler.handler(load_event(event_file, versions), None)


def job_runs(stack: Any) -> list:
    return stack.aws.glue.get_job_runs(JobName=JOB_NAME)["JobRuns"]


def test_upload_runs_the_etl_end_to_end(stack: Any, uploaded: dict) -> None:
    result = run_event(stack, "s3_put.json", uploaded)

    (started,) = result["started"]
    execution = stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])
    assert execution["status"] == "SUCCEEDED", execution
    # The Glue run got the job's default arguments plus the execution's, as Glue merges them.
    (run,) = job_runs(stack)
    assert run["JobRunState"] == "SUCCEEDED"
    assert run["Arguments"] == {
        **stack.default_arguments,
        "--RAW_BUCKET": RAW_BUCKET,
        "--DOCTORS_KEY": "raw/clinic-a/2025-10/doctors.xlsx",
        "--APPOINTMENTS_KEY": "raw/clinic-a/2025-10/appointments.xlsx",
        # The exact pair the execution found in the export folder.
        "--DOCTORS_VERSION": uploaded["raw/clinic-a/2025-10/doctors.xlsx"],
        "--APPOINTMENTS_VERSION": uploaded["raw/clinic-a/2025-10/appointments.xlsx"],
        "--source": "clinic-a",
        "--export": "2025-10",
        "--export_date": "2025-10-01",  # from the folder name
        "--RESULT_KEY": f"{REPORT_PREFIX}/_executions/{started['execution_name']}.json",
    }
    # Small inputs: the job's 1/16 DPU, passed explicitly by the state machine.
    assert run["MaxCapacity"] == 0.0625
    (call,) = stack.glue.calls
    assert call.exit_code == 0, call.stderr

    # The report in S3 is the run's; the database holds what it says was loaded.
    (run_id,) = {key.split("/")[3] for key in _all_report_keys(stack) if "/_executions/" not in key}
    report = json.loads(stack.aws.s3.get_object(
        Bucket=REPORT_BUCKET, Key=f"{REPORT_PREFIX}/clinic-a/2025-10/{run_id}/quality_report.json")["Body"].read())
    assert report["run_id"] == run_id and report["load_status"] == "succeeded"
    assert report["as_of"] == "2025-11-01"
    assert report["inputs"]["doctors"]["file"] == (
        f"s3://{RAW_BUCKET}/raw/clinic-a/2025-10/doctors.xlsx?versionId={uploaded['raw/clinic-a/2025-10/doctors.xlsx']}")
    assert report["inputs"]["appointments"]["file"] == (
        f"s3://{RAW_BUCKET}/raw/clinic-a/2025-10/appointments.xlsx?versionId={uploaded['raw/clinic-a/2025-10/appointments.xlsx']}")
    counts = report["counts"]
    assert counts["appointments"]["loaded"] > 250 and counts["appointments"]["rejected"] > 0
    assert db_count(stack.db_config, "doctors") == counts["doctors"]["loaded"]
    assert db_count(stack.db_config, "appointments") == counts["appointments"]["loaded"]
    assert db_count(stack.db_config, "etl_runs") == 1
    # The execution's output links the run's HTML report (s3:// and the console).
    output = json.loads(execution["output"])["report"]
    html = f"{REPORT_PREFIX}/clinic-a/2025-10/{run_id}/quality_report.html"
    assert output["run_id"] == run_id and output["html_report"] == f"s3://{REPORT_BUCKET}/{html}"
    assert output["html_report_console"] == (
        f"https://console.aws.amazon.com/s3/object/{REPORT_BUCKET}?region={REGION}&prefix={html}")
    assert report_keys(stack.aws, f"clinic-a/2025-10/{run_id}") == sorted([
        "queries/1_most_confirmed_doctor.csv",
        "queries/2_patient_34_confirmed.csv",
        "queries/3_cancelled_oct_21_24.csv",
        "queries/4_confirmed_per_doctor.csv",
        "queries/5_confirmation_ratio_by_specialty.csv",
        "queries/6_status_changes.csv",
        "quality_report.html",
        "quality_report.json",
        "rejected_rows.csv",
    ])
    rejected_csv = stack.aws.s3.get_object(
        Bucket=REPORT_BUCKET, Key=f"{REPORT_PREFIX}/clinic-a/2025-10/{run_id}/rejected_rows.csv")["Body"].read().decode()
    assert len(rejected_csv.splitlines()) == 1 + counts["doctors"]["rejected"] + counts["appointments"]["rejected"]

    # One data point per metric, no dimensions, equal to the report's numbers.
    metrics = metric_values(stack.aws)
    assert sorted(metrics) == sorted(METRIC_NAMES)
    expected = {
        "IdCompleteness": report["metrics"]["id_completeness"]["value"],
        "ReferentialIntegrity": report["metrics"]["referential_integrity"]["value"],
        "DuplicateRate": report["metrics"]["duplicate_rate"]["value"],
        "TypingSuccess": report["metrics"]["typing_success"]["value"],
        "AcceptanceRate": report["metrics"]["acceptance_rate"]["value"],
        "RowsLoaded": counts["doctors"]["loaded"] + counts["appointments"]["loaded"],
        "RowsRejected": counts["doctors"]["rejected"] + counts["appointments"]["rejected"],
    }
    for name, value in expected.items():
        (point,) = metrics[name]
        assert point["SampleCount"] == 1 and point["Maximum"] == pytest.approx(value), name
    assert stack.alerts() == []


def _all_report_keys(stack: Any) -> list:
    listing = stack.aws.s3.list_objects_v2(Bucket=REPORT_BUCKET, Prefix=f"{REPORT_PREFIX}/")
    return [item["Key"] for item in listing.get("Contents", [])]


def test_both_workbooks_in_one_event_give_one_run(stack: Any, uploaded: dict) -> None:
    result = run_event(stack, "s3_multiple_records.json", uploaded)

    assert len(result["started"]) == 2
    statuses = [stack.aws.sfn.describe_execution(executionArn=item["execution_arn"])["status"]
                for item in result["started"]]
    assert statuses == ["SUCCEEDED", "SUCCEEDED"]
    # The first execution to resolve claimed the pair and ran the job; the other had nothing to do.
    assert [call.exit_code for call in stack.glue.calls] == [0]
    assert [r["action"] for r in stack.resolver.resolved] == ["run", "skip"]
    assert db_count(stack.db_config, "etl_runs") == 1
    report = json.loads(stack.aws.s3.get_object(
        Bucket=REPORT_BUCKET, Key=next(k for k in _all_report_keys(stack) if k.endswith("quality_report.json"))
    )["Body"].read())
    assert db_count(stack.db_config, "appointments") == report["counts"]["appointments"]["loaded"]
    assert stack.alerts() == []


def test_redelivered_event_runs_the_job_once(stack: Any, uploaded: dict) -> None:
    first = run_event(stack, "s3_put.json", uploaded)
    second = run_event(stack, "s3_put.json", uploaded)

    assert len(first["started"]) == 1 and len(second["duplicates"]) == 1
    assert len(executions(stack.aws, stack.state_machine_arn)) == 1
    assert len(job_runs(stack)) == 1


def test_url_encoded_folder_reaches_the_job_decoded(stack: Any, sample_workbooks: tuple) -> None:
    folder = "raw/clinic-north/2025-10 (v2)/"
    doctors, appointments = sample_workbooks
    put_object(stack.aws.s3, RAW_BUCKET, folder + "DOCTORS.xlsx", doctors)  # names match case-insensitively
    version = put_object(stack.aws.s3, RAW_BUCKET, folder + "Appointments.XLSX", appointments)

    result = run_event(stack, "s3_put_url_encoded_key.json", {folder + "Appointments.XLSX": version})

    (started,) = result["started"]
    assert stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])["status"] == "SUCCEEDED"
    (run,) = job_runs(stack)
    assert run["Arguments"]["--DOCTORS_KEY"] == folder + "DOCTORS.xlsx"
    assert run["Arguments"]["--APPOINTMENTS_KEY"] == folder + "Appointments.XLSX"
    assert (run["Arguments"]["--source"], run["Arguments"]["--export"]) == ("clinic-north", "2025-10 (v2)")
    assert db_count(stack.db_config, "appointments") > 0


def test_other_files_start_nothing(stack: Any, uploaded: dict) -> None:
    for event_file in ("s3_wrong_suffix.json", "s3_outside_prefix.json", "s3_test_event.json"):
        result = run_event(stack, event_file, uploaded)
        assert result["started"] == [] and result["ignored"], event_file

    assert executions(stack.aws, stack.state_machine_arn) == []
    assert job_runs(stack) == [] and db_count(stack.db_config, "etl_runs") == 0


def test_failed_job_alerts_and_keeps_the_previous_data(stack: Any, uploaded: dict) -> None:
    run_event(stack, "s3_put.json", uploaded)
    loaded = (db_count(stack.db_config, "doctors"), db_count(stack.db_config, "appointments"))
    # A broken export replaces the appointments workbook.
    version = stack.aws.s3.put_object(Bucket=RAW_BUCKET, Key="raw/clinic-a/2025-10/appointments.xlsx",
                                      Body=b"this is not a workbook")["VersionId"]
    result = run_event(stack, "s3_put_unversioned.json", {"raw/clinic-a/2025-10/appointments.xlsx": version})

    (started,) = result["started"]
    execution = stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])
    assert execution["status"] == "FAILED"
    assert execution["error"] == asl()["States"]["EtlFailed"]["Error"]
    assert [call.exit_code for call in stack.glue.calls] == [0, 3]
    assert job_runs(stack)[-1]["JobRunState"] == "FAILED"
    (alert,) = stack.alerts()
    message = json.loads(alert)
    # Which run, which state, which error, and where its report is.
    assert message["execution"] == started["execution_arn"]
    assert message["execution_name"] == started["execution_name"]
    assert message["failed_state"] == "RunGlueEtlJob"
    assert message["error"] == "States.TaskFailed"
    assert "FAILED (exit 3)" in message["cause"]
    assert message["input"]["folder"] == "raw/clinic-a/2025-10/" and message["input"]["source"] == "clinic-a"
    assert message["reports"] == f"s3://{REPORT_BUCKET}/{REPORT_PREFIX}/"
    assert message["rerun"] == f"make rerun EXECUTION={started['execution_arn']}"
    # The failed run gave its pair back: only the first (loaded) run's claim is left.
    claims = stack.aws.s3.list_objects_v2(Bucket=REPORT_BUCKET, Prefix="runs/claims/").get("Contents", [])
    assert len(claims) == 1
    # The database still has the first run's data.
    assert (db_count(stack.db_config, "doctors"), db_count(stack.db_config, "appointments")) == loaded
    events = [event["type"] for event in history(stack.aws, started["execution_arn"])]
    assert "TaskFailed" in events and events[-1] == "ExecutionFailed"


def test_missing_database_secret_fails_clearly(stack: Any, uploaded: dict) -> None:
    stack.aws.secrets.delete_secret(SecretId=stack.secret_arn, ForceDeleteWithoutRecovery=True)

    result = run_event(stack, "s3_put.json", uploaded)

    (started,) = result["started"]
    assert stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])["status"] == "FAILED"
    (call,) = stack.glue.calls
    assert call.exit_code == 2
    assert call.stderr == (f"healthtech-etl glue job FAILED (exit 2): database secret {stack.secret_arn} "
                           "not found in Secrets Manager")
    (alert,) = stack.alerts()
    assert "database secret" in alert and "not found in Secrets Manager" in alert
    assert db_count(stack.db_config, "etl_runs") == 0 and _all_report_keys(stack) == []


def test_concurrent_run_is_retried_until_the_other_run_finishes(stack: Any, uploaded: dict) -> None:
    from moto.glue.models import FakeJobRun, glue_backends

    # Another run of the job is in progress (MaxConcurrentRuns=1), e.g. started by hand.
    job = glue_backends[ACCOUNT][REGION].jobs[JOB_NAME]
    blocker = FakeJobRun(job_name=JOB_NAME, arguments={})
    blocker.status = "RUNNING"
    job.job_runs.append(blocker)
    waits: list = []

    def other_run_finishes(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            blocker.status = "SUCCEEDED"

    moto_patches.RETRY_SLEEPS.clear()
    moto_patches.ON_RETRY_SLEEP.append(other_run_finishes)
    try:
        result = run_event(stack, "s3_put.json", uploaded)
    finally:
        moto_patches.ON_RETRY_SLEEP.remove(other_run_finishes)

    (started,) = result["started"]
    assert stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])["status"] == "SUCCEEDED"
    retry = asl()["States"]["RunGlueEtlJob"]["Retry"][0]
    assert retry["ErrorEquals"] == ["Glue.ConcurrentRunsExceededException"] and retry["JitterStrategy"] == "FULL"
    # Two refusals, each waited a random time up to IntervalSeconds x BackoffRate^n (full jitter), then the run.
    assert len(waits) == 2
    for attempt, wait in enumerate(waits):
        assert 0 <= wait <= min(retry["IntervalSeconds"] * retry["BackoffRate"] ** attempt, retry["MaxDelaySeconds"])
    failures = [event["taskFailedEventDetails"]["error"] for event in history(stack.aws, started["execution_arn"])
                if event["type"] == "TaskFailed"]
    assert failures == ["Glue.ConcurrentRunsExceededException"] * 2
    assert [call.exit_code for call in stack.glue.calls] == [0]
    assert db_count(stack.db_config, "etl_runs") == 1


# --------------------------------------------------------------------------- one upload pair, one run


def upload_event(key: str, version: str, sequencer: str) -> dict:
    """The S3 notification for one upload (s3_put.json with this key, version and sequencer)."""
    event = load_event("s3_put.json")
    event["Records"][0]["s3"]["object"].update(key=key, versionId=version, sequencer=sequencer)
    return event


def statuses(stack: Any) -> list:
    return sorted(item["status"] for item in executions(stack.aws, stack.state_machine_arn))


@pytest.fixture
def new_exports(sample_workbooks: tuple, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A second, different export of each workbook (other rows), so the versions tell apart."""
    from healthtech_etl.sample import write_sample_workbooks

    doctors, appointments = write_sample_workbooks(tmp_path_factory.mktemp("new-exports"), rows=120, seed=23)
    return {"raw/clinic-a/2025-10/doctors.xlsx": doctors, "raw/clinic-a/2025-10/appointments.xlsx": appointments}


def test_one_new_workbook_runs_once_with_the_others_latest_version(
    stack: Any, uploaded: dict, new_exports: dict
) -> None:
    version = put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/appointments.xlsx", new_exports["raw/clinic-a/2025-10/appointments.xlsx"])

    result = lambda_handler.handler(upload_event("raw/clinic-a/2025-10/appointments.xlsx", version, "0065B0000000000003"), None)

    (started,) = result["started"]
    assert stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])["status"] == "SUCCEEDED"
    (run,) = job_runs(stack)
    assert run["Arguments"]["--APPOINTMENTS_VERSION"] == version
    assert run["Arguments"]["--DOCTORS_VERSION"] == uploaded["raw/clinic-a/2025-10/doctors.xlsx"]
    assert stack.alerts() == []


def test_second_upload_after_the_window_runs_again_with_the_new_pair(
    stack: Any, uploaded: dict, new_exports: dict
) -> None:
    doctors = put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/doctors.xlsx", new_exports["raw/clinic-a/2025-10/doctors.xlsx"])
    lambda_handler.handler(upload_event("raw/clinic-a/2025-10/doctors.xlsx", doctors, "0065B0000000000004"), None)
    appointments = put_object(stack.aws.s3, RAW_BUCKET, "raw/clinic-a/2025-10/appointments.xlsx", new_exports["raw/clinic-a/2025-10/appointments.xlsx"])
    lambda_handler.handler(upload_event("raw/clinic-a/2025-10/appointments.xlsx", appointments, "0065B0000000000005"), None)

    assert statuses(stack) == ["SUCCEEDED", "SUCCEEDED"]
    pairs = [(r["Arguments"]["--DOCTORS_VERSION"], r["Arguments"]["--APPOINTMENTS_VERSION"])
             for r in job_runs(stack)]  # in start order
    assert pairs == [(doctors, uploaded["raw/clinic-a/2025-10/appointments.xlsx"]), (doctors, appointments)]
    assert stack.alerts() == []


def test_redelivered_events_of_a_pair_stay_deduplicated(stack: Any, uploaded: dict) -> None:
    first = run_event(stack, "s3_multiple_records.json", uploaded)
    again = run_event(stack, "s3_multiple_records.json", uploaded)

    assert len(first["started"]) == 2
    assert again["started"] == [] and len(again["duplicates"]) == 2
    assert len(executions(stack.aws, stack.state_machine_arn)) == 2
    assert len(job_runs(stack)) == 1 and len(stack.resolver.resolved) == 2


# --------------------------------------------------------------------------- capacity and resolver failures


def test_inputs_above_the_size_threshold_run_with_one_dpu(
    stack: Any, uploaded: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = [stack.aws.s3.head_object(Bucket=RAW_BUCKET, Key=key)["ContentLength"] for key in uploaded]
    monkeypatch.setenv("LARGE_INPUT_BYTES", str(sum(sizes) - 1))  # one byte less than the pair

    run_event(stack, "s3_put.json", uploaded)

    (run,) = job_runs(stack)
    assert run["MaxCapacity"] == 1.0 and run["JobRunState"] == "SUCCEEDED"
    (resolved,) = stack.resolver.resolved
    assert resolved["input_bytes"] == sum(sizes) and resolved["max_capacity"] == 1.0


def test_inputs_at_the_size_threshold_keep_the_small_capacity(
    stack: Any, uploaded: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = [stack.aws.s3.head_object(Bucket=RAW_BUCKET, Key=key)["ContentLength"] for key in uploaded]
    monkeypatch.setenv("LARGE_INPUT_BYTES", str(sum(sizes)))

    run_event(stack, "s3_put.json", uploaded)

    (run,) = job_runs(stack)
    assert run["MaxCapacity"] == 0.0625


def test_resolver_failure_alerts_with_the_failing_state(
    stack: Any, uploaded: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAIM_BUCKET", "healthtech-no-such-bucket")  # a real S3 error, not a stub

    result = run_event(stack, "s3_put.json", uploaded)

    (started,) = result["started"]
    execution = stack.aws.sfn.describe_execution(executionArn=started["execution_arn"])
    assert execution["status"] == "FAILED" and job_runs(stack) == []
    (alert,) = stack.alerts()
    message = json.loads(alert)
    assert message["failed_state"] == "ResolveInputs"
    assert message["execution"] == started["execution_arn"]
    # The Lambda runtime reports the exception class: botocore names it after the S3 error code.
    assert message["error"] == "NoSuchBucket" and "PutObject" in message["cause"]
