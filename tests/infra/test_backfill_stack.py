"""The backfill state machine of the default (dev) stack: Distributed Map over the clinics, inline Map
in date order, Glue .sync with full-jitter retries, the planner's least-privilege role."""

from __future__ import annotations

import json

import pytest
from conftest import Synth, actions_of, find_id, get_att, ref, role_of_function, statements_of_role

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_committed_backfill_asl_equals_the_synthesized_definition(synth: Synth) -> None:
    from export_backfill_asl import ASL_FILE, synthesized_backfill_asl

    committed = json.loads(ASL_FILE.read_text(encoding="utf-8"))
    assert synthesized_backfill_asl(synth.template) == committed, "stale ASL: run `python infra/export_backfill_asl.py`"


def test_clinics_in_parallel_each_clinics_exports_one_at_a_time(synth: Synth) -> None:
    from export_backfill_asl import synthesized_backfill_asl

    states = synthesized_backfill_asl(synth.template)["States"]
    clinics = states["BackfillClinics"]
    assert clinics["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    assert clinics["MaxConcurrency"] == 10  # backfillConcurrency's default
    assert clinics["ItemReader"] == {
        "Resource": "arn:${Partition}:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket.$": "$.plan.manifest_bucket", "Key.$": "$.plan.manifest_key"},
    }
    inner = clinics["ItemProcessor"]["States"]["LoadExportsInDateOrder"]
    assert inner["ItemProcessor"]["ProcessorConfig"] == {"Mode": "INLINE"} and inner["MaxConcurrency"] == 1
    assert inner["Catch"][0]["Next"] == "ClinicFailed"
    run = inner["ItemProcessor"]["States"]["RunGlueEtlJob"]
    assert run["Resource"] == "arn:${Partition}:states:::glue:startJobRun.sync"
    assert run["Parameters"]["JobRunQueuingEnabled"] is True
    arguments = run["Parameters"]["Arguments"]
    assert arguments["--LOAD_MODE"] == "merge"
    assert {arguments[f"{name}.$"] for name in ("--source", "--export_date", "--export")} == {
        "$.export.source", "$.export.export_date", "$.export.export"}
    assert [r["ErrorEquals"][0] for r in run["Retry"]] == ["Glue.ConcurrentRunsExceededException",
                                                           "Glue.ThrottlingException"]
    assert all(r["JitterStrategy"] == "FULL" and r["MaxDelaySeconds"] <= 600 for r in run["Retry"])
    # Any failure ends in the alert, then FAILED.
    assert states["PlanBackfill"]["Catch"][0]["Next"] == clinics["Catch"][0]["Next"] == "NotifyBackfillFailure"
    assert states["NotifyBackfillFailure"]["Next"] == "BackfillFailed"


def test_backfill_machine_logs_traces_and_may_run_only_this_job(synth: Synth) -> None:
    machine_id = find_id(synth, "AWS::StepFunctions::StateMachine", "Backfill")
    props = synth.template["Resources"][machine_id]["Properties"]
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    statements = statements_of_role(synth, role_id)
    glue = [s for s in statements if "glue:StartJobRun" in s["Action"]]
    (only,) = glue
    assert ref(find_id(synth, "AWS::Glue::Job", "EtlJob")) in only["Resource"]["Fn::Join"][1]
    assert "s3:*" not in actions_of(statements)


def test_planner_lists_raw_and_writes_only_plans(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "BackfillPlanFunction")
    props = synth.template["Resources"][function_id]["Properties"]
    assert props["Handler"] == "backfill_plan.handler"
    assert props["Environment"]["Variables"]["RAW_PREFIX"] == "raw/"
    assert props["Environment"]["Variables"]["MANIFEST_PREFIX"] == "backfills/"
    statements = statements_of_role(synth, role_of_function(synth, function_id))
    assert actions_of(statements) == {"s3:ListBucket", "s3:ListBucketVersions", "s3:PutObject",
                                      "kms:GenerateDataKey", "logs:CreateLogStream", "logs:PutLogEvents"}
    (listing,) = [s for s in statements if s.get("Sid") == "ListRawExports"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["raw/*"]}}
    raw_id = find_id(synth, "AWS::S3::Bucket", "StorageRawBucket")
    assert listing["Resource"] == get_att(raw_id)


def test_stack_outputs_the_backfill_machine(synth: Synth) -> None:
    machine_id = find_id(synth, "AWS::StepFunctions::StateMachine", "Backfill")
    assert synth.template["Outputs"]["BackfillStateMachineArn"]["Value"] == ref(machine_id)


@pytest.mark.parametrize(("value", "ok"), [("3", True), ("1000", True), ("0", False), ("many", False)])
def test_backfill_concurrency_context(value: str, ok: bool) -> None:
    from healthtech_infra.config import ConfigError, EtlConfig

    context = {"backfillConcurrency": value}
    if ok:
        assert EtlConfig.from_context(context.get).backfill_concurrency == int(value)
    else:
        with pytest.raises(ConfigError, match="backfillConcurrency"):
            EtlConfig.from_context(context.get)


def test_start_backfill_reads_the_env_and_the_clinics_and_refuses_bad_names(capsys: pytest.CaptureFixture) -> None:
    import start_backfill

    assert start_backfill.parse(["-c", "env=prod", "-c", "alertEmail=a@b.org", "--sources", "clinic-a clinic-b"]) == (
        "prod", ["clinic-a", "clinic-b"])
    assert start_backfill.parse(["--sources", ""]) == ("dev", [])
    assert start_backfill.main(["--sources", "Clinic A"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "start_backfill: not a clinic name: 'Clinic', 'A' (a-z, 0-9, '_' or '-')"]
