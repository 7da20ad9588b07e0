"""lambda/handler.py against moto Step Functions: which events start which executions.

A one-state stand-in state machine is enough here (the real definition and the Glue job are
exercised by test_etl_chain.py); what matters is the execution name and input."""

import json
import re
from typing import Any

import pytest
from awsenv import ACCOUNT, RAW_BUCKET, executions, lambda_handler, load_event

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


@pytest.fixture
def trigger(moto_sfn: None, aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    arn = aws.sfn.create_state_machine(
        name="etl-stand-in",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/states",
    )["stateMachineArn"]
    monkeypatch.setenv("STATE_MACHINE_ARN", arn)
    for name in ("RAW_PREFIX", "DOCTORS_FILENAME", "APPOINTMENTS_FILENAME", "LOG_LEVEL", "PARTNER_WAIT_SECONDS"):
        monkeypatch.delenv(name, raising=False)

    def started_inputs() -> list:
        return [
            json.loads(aws.sfn.describe_execution(executionArn=item["executionArn"])["input"])
            for item in executions(aws, arn)
        ]

    aws.arn = arn
    aws.started_inputs = started_inputs
    return aws


def test_put_event_starts_one_execution_with_both_keys_of_the_folder(trigger: Any) -> None:
    result = lambda_handler.handler(load_event("s3_put.json"), None)

    assert [item["key"] for item in result["started"]] == ["raw/clinic-a/2025-10/doctors.xlsx"]
    assert result["duplicates"] == result["ignored"] == result["misnamed"] == result["rejected"] == []
    assert trigger.started_inputs() == [{
        "bucket": RAW_BUCKET,
        "source": "clinic-a",
        "export": "2025-10",
        "folder": "raw/clinic-a/2025-10/",
        "trigger_key": "raw/clinic-a/2025-10/doctors.xlsx",
        "trigger_version": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY",
        "partner_wait_seconds": 3600,  # the default partner wait
        "rerun_of": "",
    }]
    name = result["started"][0]["execution_name"]
    assert NAME_PATTERN.match(name) and name.startswith("etl-doctors-")
    assert result["started"][0]["execution_arn"].endswith(":" + name)


def test_redelivered_event_does_not_start_a_second_execution(trigger: Any) -> None:
    first = lambda_handler.handler(load_event("s3_put.json"), None)
    second = lambda_handler.handler(load_event("s3_put.json"), None)

    assert len(first["started"]) == 1
    assert second["started"] == []
    assert second["duplicates"] == [{"key": "raw/clinic-a/2025-10/doctors.xlsx", "execution_name": first["started"][0]["execution_name"]}]
    assert len(executions(trigger, trigger.arn)) == 1


def test_new_version_of_the_same_key_starts_a_new_execution(trigger: Any) -> None:
    event = load_event("s3_put.json")
    lambda_handler.handler(event, None)
    event["Records"][0]["s3"]["object"].update(versionId="secondVersionId", sequencer="0065A1B2C3D4E5F699")

    result = lambda_handler.handler(event, None)

    assert len(result["started"]) == 1
    assert sorted(item["trigger_version"] for item in trigger.started_inputs()) == [
        "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", "secondVersionId"]


def test_url_encoded_key_is_decoded(trigger: Any) -> None:
    result = lambda_handler.handler(load_event("s3_put_url_encoded_key.json"), None)

    assert [item["key"] for item in result["started"]] == ["raw/clinic-north/2025-10 (v2)/Appointments.XLSX"]
    (started,) = trigger.started_inputs()
    assert started["folder"] == "raw/clinic-north/2025-10 (v2)/" and started["export"] == "2025-10 (v2)"
    assert started["trigger_key"] == "raw/clinic-north/2025-10 (v2)/Appointments.XLSX"
    assert NAME_PATTERN.match(result["started"][0]["execution_name"])


def test_unversioned_bucket_gives_null_version_and_sequencer_tells_uploads_apart(trigger: Any) -> None:
    event = load_event("s3_put_unversioned.json")
    first = lambda_handler.handler(event, None)
    event["Records"][0]["s3"]["object"]["sequencer"] = "0065A1B2C3D4E5F8FF"  # the same key uploaded again
    second = lambda_handler.handler(event, None)

    assert [item["trigger_version"] for item in trigger.started_inputs()] == ["null", "null"]
    assert first["started"][0]["execution_name"] != second["started"][0]["execution_name"]


def test_s3_test_event_is_ignored(trigger: Any) -> None:
    result = lambda_handler.handler(load_event("s3_test_event.json"), None)

    assert result["ignored"] == [{"reason": "s3:TestEvent", "bucket": RAW_BUCKET}]
    assert result["started"] == [] and executions(trigger, trigger.arn) == []


def test_multiple_records_start_one_execution_per_workbook(trigger: Any) -> None:
    result = lambda_handler.handler(load_event("s3_multiple_records.json"), None)

    assert [item["key"] for item in result["started"]] == ["raw/clinic-a/2025-10/doctors.xlsx", "raw/clinic-a/2025-10/appointments.xlsx"]
    assert {item["key"]: item["reason"] for item in result["ignored"]} == {
        "raw/clinic-a/2025-10/README.txt": "not an .xlsx workbook",
        "raw/clinic-a/2025-10/appointments.xlsx": "event 'ObjectRemoved:Delete' is not ObjectCreated",
    }
    assert sorted(item["trigger_key"] for item in trigger.started_inputs()) == [
        "raw/clinic-a/2025-10/appointments.xlsx", "raw/clinic-a/2025-10/doctors.xlsx"]


@pytest.mark.parametrize("event_file, reason", [
    ("s3_wrong_suffix.json", "not an .xlsx workbook"),
    ("s3_outside_prefix.json", "not under prefix 'raw/'"),
])
def test_other_objects_are_ignored(trigger: Any, event_file: str, reason: str) -> None:
    result = lambda_handler.handler(load_event(event_file), None)

    assert [item["reason"] for item in result["ignored"]] == [reason]
    assert result["started"] == [] and executions(trigger, trigger.arn) == []


def test_excel_lock_files_are_ignored(trigger: Any) -> None:
    event = load_event("s3_put.json")
    event["Records"][0]["s3"]["object"]["key"] = "raw/~%24doctors.xlsx"  # "~$doctors.xlsx"

    result = lambda_handler.handler(event, None)

    assert result["ignored"] == [{"key": "raw/~$doctors.xlsx", "reason": "Excel lock file"}]


def test_malformed_records_are_rejected_and_the_good_one_still_starts(trigger: Any) -> None:
    result = lambda_handler.handler(load_event("s3_malformed.json"), None)

    assert [item["record"] for item in result["rejected"]] == [0, 1, 2]
    assert "s3.object.key" in result["rejected"][0]["reason"]
    assert "aws:sqs" in result["rejected"][1]["reason"]
    assert [item["key"] for item in result["started"]] == ["raw/clinic-a/2025-10/appointments.xlsx"]


@pytest.mark.parametrize("event", [None, [], "garbage", {}, {"Records": "nope"}, {"Records": []}, 42])
def test_garbage_events_are_rejected_without_raising(trigger: Any, event: Any) -> None:
    result = lambda_handler.handler(event, None)

    assert result["rejected"] == [{"record": None, "reason": "event has no Records list"}]
    assert executions(trigger, trigger.arn) == []


def test_prefix_and_file_names_come_from_the_environment(trigger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAW_PREFIX", "incoming")  # no trailing slash: still a folder prefix
    monkeypatch.setenv("DOCTORS_FILENAME", "medicos.xlsx")
    monkeypatch.setenv("APPOINTMENTS_FILENAME", "citas.xlsx")
    event = load_event("s3_put.json")
    event["Records"][0]["s3"]["object"]["key"] = "incoming/clinic-7/2025-10/Medicos.xlsx"

    ignored = lambda_handler.handler(load_event("s3_put.json"), None)  # raw/ is no longer watched
    result = lambda_handler.handler(event, None)

    assert ignored["ignored"][0]["reason"] == "not under prefix 'incoming/'"
    assert len(result["started"]) == 1
    (started,) = trigger.started_inputs()
    assert started["folder"] == "incoming/clinic-7/2025-10/" and started["source"] == "clinic-7"


def test_missing_state_machine_arn_is_a_configuration_error(trigger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_MACHINE_ARN")

    with pytest.raises(RuntimeError, match="STATE_MACHINE_ARN is not set"):
        lambda_handler.handler(load_event("s3_put.json"), None)


def test_aws_errors_fail_the_invocation_so_lambda_retries(trigger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_MACHINE_ARN", trigger.arn.replace("etl-stand-in", "deleted-machine"))

    with pytest.raises(RuntimeError, match=r"could not start 1 execution\(s\).*raw/clinic-a/2025-10/doctors.xlsx: StateMachineDoesNotExist"):
        lambda_handler.handler(load_event("s3_put.json"), None)


def test_logs_are_json_lines(trigger: Any, capsys: pytest.CaptureFixture) -> None:
    lambda_handler.handler(load_event("s3_multiple_records.json"), None)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    started = [line for line in lines if line["message"] == "started ETL execution"]
    assert [line["key"] for line in started] == ["raw/clinic-a/2025-10/doctors.xlsx", "raw/clinic-a/2025-10/appointments.xlsx"]
    assert all(line["level"] == "INFO" and line["execution_arn"].startswith("arn:aws:states:") for line in started)
    summary = [line for line in lines if line["message"] == "trigger summary"]
    assert summary[-1]["started"] == 2 and summary[-1]["ignored"] == 2


def test_execution_names_are_short_safe_and_deterministic() -> None:
    long_key = "raw/" + "ü" * 300 + "/" + "a very long workbook name (final) v2" * 5 + ".xlsx"
    name = lambda_handler.execution_name(RAW_BUCKET, long_key, "null", "00AB")

    assert NAME_PATTERN.match(name)
    assert name == lambda_handler.execution_name(RAW_BUCKET, long_key, "null", "00AB")
    assert name != lambda_handler.execution_name(RAW_BUCKET, long_key, "null", "00AC")
    assert name != lambda_handler.execution_name("other-bucket", long_key, "null", "00AB")


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("45", 45), ("", 3600), ("soon", 3600), ("-5", 3600)])
def test_partner_wait_comes_from_the_environment(
    trigger: Any, monkeypatch: pytest.MonkeyPatch, value: str, expected: int
) -> None:
    monkeypatch.setenv("PARTNER_WAIT_SECONDS", value)

    lambda_handler.handler(load_event("s3_put.json"), None)

    (started,) = trigger.started_inputs()
    assert started["partner_wait_seconds"] == expected


def test_misnamed_and_misplaced_workbooks_start_nothing_and_are_counted(trigger: Any) -> None:
    result = lambda_handler.handler(load_event("s3_put_misnamed.json"), None)

    assert result["started"] == [] and executions(trigger, trigger.arn) == []
    assert {item["key"]: item["reason"] for item in result["misnamed"]} == {
        "raw/clinic-a/2025-10/appointments (1).xlsx": "workbook name is neither doctors.xlsx nor appointments.xlsx",
        "raw/doctors.xlsx": "not in an export folder raw/<source>/<export>/",
    }
    (metric,) = trigger.cloudwatch.list_metrics(Namespace="HealthTechETL")["Metrics"]
    assert metric["MetricName"] == "MisnamedUploads" and metric.get("Dimensions", []) == []
    (point,) = trigger.cloudwatch.get_metric_statistics(
        Namespace="HealthTechETL", MetricName="MisnamedUploads", StartTime="2020-01-01", EndTime="2100-01-01",
        Period=86400, Statistics=["Sum"])["Datapoints"]
    assert point["Sum"] == 2


@pytest.mark.parametrize(("key", "reason"), [
    ("raw/Clinic A/2025-10/doctors.xlsx", "source folder 'Clinic A' is not a clinic name (a-z, 0-9, '-', '_')"),
    ("raw/clinic-a/doctors.xlsx", "not in an export folder raw/<source>/<export>/"),
    ("raw/clinic-a/2025-10/old/doctors.xlsx", "not in an export folder raw/<source>/<export>/"),
])
def test_keys_outside_the_layout_are_misnamed(trigger: Any, key: str, reason: str) -> None:
    event = load_event("s3_put.json")
    event["Records"][0]["s3"]["object"]["key"] = key

    result = lambda_handler.handler(event, None)

    assert result["misnamed"] == [{"key": key, "reason": reason}] and result["started"] == []
