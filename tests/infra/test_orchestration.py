"""The trigger Lambda, the resolver Lambda and the state machine of the default (dev) stack."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match
from conftest import (
    Synth,
    actions_of,
    as_list,
    bucket_ids,
    find_id,
    get_att,
    ref,
    role_of_function,
    statements_of_role,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------- orchestration


def test_trigger_lambda_runtime_handler_and_environment(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    props = synth.template["Resources"][function_id]["Properties"]
    major, minor = props["Runtime"].removeprefix("python").split(".")
    assert (int(major), int(minor)) >= (3, 12)
    assert props["Handler"] == "handler.handler"
    machine_id, _ = synth.etl_state_machine()
    assert props["Environment"]["Variables"] == {
        "STATE_MACHINE_ARN": ref(machine_id),
        "RAW_PREFIX": "raw/",
        "DOCTORS_FILENAME": "doctors.xlsx",
        "APPOINTMENTS_FILENAME": "appointments.xlsx",
        "PARTNER_WAIT_SECONDS": "3600",
        "METRIC_NAMESPACE": "HealthTechETL",
        "LOG_LEVEL": "INFO",
    }
    log_group = find_id(synth, "AWS::Logs::LogGroup", "TriggerFunctionLogs")
    assert props["LoggingConfig"]["LogGroup"] == ref(log_group)
    # No reserved concurrency by default: a new account (quota 10) could not deploy it.
    assert "ReservedConcurrentExecutions" not in props


def test_trigger_failures_go_to_an_encrypted_alarmed_queue(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    queue_id, queue = synth.one("AWS::SQS::Queue")
    key_id, _ = synth.one("AWS::KMS::Key")
    assert queue["Properties"]["KmsMasterKeyId"] == get_att(key_id)
    _, invoke_config = synth.one("AWS::Lambda::EventInvokeConfig")
    assert invoke_config["Properties"] == {
        "DestinationConfig": {"OnFailure": {"Destination": get_att(queue_id)}},
        "FunctionName": ref(function_id),
        "MaximumEventAgeInSeconds": 6 * 3600,
        "MaximumRetryAttempts": 2,
        "Qualifier": "$LATEST",
    }
    synth.assertions.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {"PolicyDocument": {"Statement": Match.array_with([Match.object_like(
            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}},
    )
    (alarm,) = [
        a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    ]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": get_att(queue_id, "QueueName")}]
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_resolver_lambda_reads_raw_writes_claims_and_picks_capacity(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationResolverFunction")
    props = synth.template["Resources"][function_id]["Properties"]
    ids = bucket_ids(synth)
    assert props["Handler"] == "resolve_inputs.handler"
    assert props["Environment"]["Variables"] == {
        "CLAIM_BUCKET": ref(ids["StorageArtifactsBucket"]),
        "CLAIM_PREFIX": "runs/claims/",
        "RESULT_PREFIX": "reports/_executions/",
        "LARGE_INPUT_BYTES": str(16 * 1024 * 1024),
        "DOCTORS_FILENAME": "doctors.xlsx",
        "APPOINTMENTS_FILENAME": "appointments.xlsx",
        "METRIC_NAMESPACE": "HealthTechETL",
    }
    statements = statements_of_role(synth, role_of_function(synth, function_id))
    by_sid = {s["Sid"]: s for s in statements if "Sid" in s}
    assert actions_of(statements) == {
        "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:PutObject", "s3:DeleteObject",
        "kms:Decrypt", "kms:GenerateDataKey", "logs:CreateLogStream", "logs:PutLogEvents", "cloudwatch:PutMetricData",
    }  # fmt: skip
    assert by_sid["HeadRawUploads"]["Resource"] == {"Fn::Join": ["", [get_att(ids["StorageRawBucket"]), "/raw/*"]]}
    assert by_sid["ClaimAndReleasePairs"]["Resource"] == {
        "Fn::Join": ["", [get_att(ids["StorageArtifactsBucket"]), "/runs/claims/*"]]
    }
    assert by_sid["ReadRunResults"]["Resource"] == {
        "Fn::Join": ["", [get_att(ids["StorageArtifactsBucket"]), "/reports/_executions/*"]]
    }
    assert by_sid["PutPipelineMetrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "HealthTechETL"}}
    assert by_sid["TellMissingFromForbidden"]["Resource"] == get_att(ids["StorageRawBucket"])
    # Claims only need to outlive redelivery and the settle window.
    rules = synth.template["Resources"][ids["StorageArtifactsBucket"]]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {"Id": "expire-pair-claims", "Prefix": "runs/claims/", "ExpirationInDays": 30, "Status": "Enabled"} in rules


def test_trigger_lambda_may_only_start_this_state_machine(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    role_id = role_of_function(synth, function_id)
    assert "ManagedPolicyArns" not in synth.template["Resources"][role_id]["Properties"]
    statements = statements_of_role(synth, role_id)
    machine_id, _ = synth.etl_state_machine()
    log_group = find_id(synth, "AWS::Logs::LogGroup", "TriggerFunctionLogs")
    queue_id, _ = synth.one("AWS::SQS::Queue")
    key_id, _ = synth.one("AWS::KMS::Key")
    assert actions_of(statements) == {
        "states:StartExecution", "logs:CreateLogStream", "logs:PutLogEvents", "cloudwatch:PutMetricData",
        # the on-failure destination: send to the KMS-encrypted queue
        "sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
        "kms:Decrypt", "kms:Encrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
    }  # fmt: skip
    for statement in statements:
        actions = as_list(statement["Action"])
        if "states:StartExecution" in actions:
            assert statement["Resource"] == ref(machine_id)
        elif any(a.startswith("sqs:") for a in actions):
            assert statement["Resource"] == get_att(queue_id)
        elif any(a.startswith("kms:") for a in actions):
            assert statement["Resource"] == get_att(key_id)
        elif actions == ["cloudwatch:PutMetricData"]:
            assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "HealthTechETL"}}
        else:
            assert statement["Resource"] == get_att(log_group)


def test_state_machine_logs_everything_encrypted_with_tracing(synth: Synth) -> None:
    _, machine = synth.etl_state_machine()
    props = machine["Properties"]
    log_group = find_id(synth, "AWS::Logs::LogGroup", "OrchestrationStateMachineLogs")
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    destination = props["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
    assert destination == get_att(log_group)
    key_id, _ = synth.one("AWS::KMS::Key")
    assert synth.template["Resources"][log_group]["Properties"]["KmsKeyId"] == get_att(key_id)
    assert props["TracingConfiguration"] == {"Enabled": True}


def test_state_machine_role_runs_only_this_job_and_publishes_only_to_the_topic(synth: Synth) -> None:
    _, machine = synth.etl_state_machine()
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = statements_of_role(synth, role_id)
    topic_id, _ = synth.one("AWS::SNS::Topic")
    job_id, _ = synth.etl_job()
    glue = [s for s in statements if any(a.startswith("glue:") for a in as_list(s["Action"]))]
    assert {"glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"} <= actions_of(
        glue
    )
    assert all(job_id in json.dumps(s["Resource"]) for s in glue)
    sns = [s for s in statements if "sns:Publish" in as_list(s["Action"])]
    assert [s["Resource"] for s in sns] == [ref(topic_id)]
    # The topic is KMS-encrypted: publishing needs its key, through SNS only.
    key_id, _ = synth.one("AWS::KMS::Key")
    assert synth.template["Resources"][topic_id]["Properties"]["KmsMasterKeyId"] == get_att(key_id)
    (kms,) = [s for s in statements if any(a.startswith("kms:") for a in as_list(s["Action"]))]
    assert sorted(as_list(kms["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == get_att(key_id)
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Join": ["", ["sns.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}}
    }
    resolver_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationResolverFunction")
    invoke = next(s for s in statements if "lambda:InvokeFunction" in as_list(s["Action"]))
    assert invoke["Resource"][0] == get_att(resolver_id)


def test_committed_asl_equals_the_synthesized_definition(synth: Synth) -> None:
    from export_asl import ASL_FILE, synthesized_asl

    committed = json.loads(ASL_FILE.read_text(encoding="utf-8"))
    assert synthesized_asl(synth.template) == committed, "stale ASL: run `python infra/export_asl.py`"


def test_asl_resolves_waits_once_for_a_partner_then_runs_skips_or_reports_it_missing(synth: Synth) -> None:
    from export_asl import synthesized_asl

    asl = synthesized_asl(synth.template)
    states = asl["States"]
    assert asl["StartAt"] == "ResolveInputs"
    assert set(states) == {
        "ResolveInputs", "RunOrWait", "WaitForPartner", "RecheckInputs", "ExportIncomplete", "NothingToLoad",
        "RunGlueEtlJob", "LinkReport", "EtlSucceeded", "ReleaseClaim", "ResolveInputsFailed", "RecheckInputsFailed",
        "GlueJobFailed", "NotifyFailure", "EtlFailed",
    }  # fmt: skip
    # The execution may wait partnerWaitMinutes (60) before the run's own 180 minutes.
    assert asl["TimeoutSeconds"] == (180 + 60) * 60
    for name, final in (("ResolveInputs", False), ("RecheckInputs", True)):
        task = states[name]
        assert task["Resource"] == "${ResolveInputsFunctionArn}" and task["ResultPath"] == "$.inputs"
        assert task["Parameters"] == {"action": "resolve", "final": final, "execution.$": "$$.Execution.Id",
                                      "input.$": "$"}
        assert task["Next"] == "RunOrWait"
    assert states["RunOrWait"]["Choices"] == [
        {"Variable": "$.inputs.action", "StringEquals": action, "Next": target}
        for action, target in (("run", "RunGlueEtlJob"), ("wait", "WaitForPartner"), ("missing", "ExportIncomplete"))
    ]
    assert states["RunOrWait"]["Default"] == "NothingToLoad" and states["NothingToLoad"]["Type"] == "Succeed"
    assert states["WaitForPartner"]["SecondsPath"] == "$.partner_wait_seconds"
    assert states["WaitForPartner"]["Next"] == "RecheckInputs"
    assert states["ExportIncomplete"]["Type"] == "Fail" and states["ExportIncomplete"]["Error"] == "ExportMissingPartner"
    # Only what moto's executor runs: JSONPath, no JSONata, no result selectors.
    text = json.dumps(asl)
    for unsupported in ("QueryLanguage", "JSONata", "ResultSelector", 'Arguments": "{%', "Output"):
        assert unsupported not in text


def test_asl_runs_the_glue_job_sync_queued_with_jittered_retries_release_and_alert(synth: Synth) -> None:
    from export_asl import synthesized_asl

    states = synthesized_asl(synth.template)["States"]
    run = states["RunGlueEtlJob"]
    assert run["Resource"] == "arn:${Partition}:states:::glue:startJobRun.sync"
    assert run["Parameters"] == {
        "JobName": "${GlueJobName}",
        "JobRunQueuingEnabled": True,
        "MaxCapacity.$": "$.inputs.max_capacity",
        "Arguments": {
            "--RAW_BUCKET.$": "$.inputs.bucket",
            "--DOCTORS_KEY.$": "$.inputs.doctors_key",
            "--APPOINTMENTS_KEY.$": "$.inputs.appointments_key",
            "--DOCTORS_VERSION.$": "$.inputs.doctors_version",
            "--APPOINTMENTS_VERSION.$": "$.inputs.appointments_version",
            "--source.$": "$.inputs.source",
            "--export.$": "$.inputs.export",
            "--export_date.$": "$.inputs.export_date",
            "--RESULT_KEY.$": "$.inputs.result_key",
        },
    }
    assert run["Retry"] == [
        {
            "ErrorEquals": ["Glue.ConcurrentRunsExceededException"],
            "IntervalSeconds": 30,
            "MaxAttempts": 8,
            "BackoffRate": 2,
            "MaxDelaySeconds": 600,
            "JitterStrategy": "FULL",
        },
        {
            "ErrorEquals": [
                "Glue.ThrottlingException",
                "Glue.InternalServiceException",
                "Glue.OperationTimeoutException",
                "Glue.AWSGlueException",
            ],
            "IntervalSeconds": 15,
            "MaxAttempts": 4,
            "BackoffRate": 2,
            "JitterStrategy": "FULL",
        },
    ]
    # A failed run releases its claim first (a failed release still alerts), then alerts and fails.
    assert run["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "ReleaseClaim"}]
    release = states["ReleaseClaim"]
    assert release["Parameters"] == {"action": "release", "claim_key.$": "$.inputs.claim_key",
                                     "execution.$": "$$.Execution.Id"}
    assert release["Next"] == "GlueJobFailed"
    assert release["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.release_error",
                                 "Next": "GlueJobFailed"}]
    for task, marker in (("ResolveInputs", "ResolveInputsFailed"), ("RecheckInputs", "RecheckInputsFailed")):
        assert states[task]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": marker}]
    for marker, task in (("ResolveInputsFailed", "ResolveInputs"), ("RecheckInputsFailed", "RecheckInputs"),
                         ("GlueJobFailed", "RunGlueEtlJob")):
        assert states[marker] == {
            "Type": "Pass", "Result": task, "ResultPath": "$.failed_state", "Next": "NotifyFailure"
        }  # fmt: skip
    # A loaded run links its report in the execution output; failing to read the link does not fail it.
    assert run["Next"] == "LinkReport" and states["LinkReport"]["ResultPath"] == "$.report"
    assert states["LinkReport"]["Parameters"]["action"] == "report"
    assert states["LinkReport"]["Next"] == "EtlSucceeded" and states["EtlSucceeded"]["Type"] == "Succeed"
    notify = states["NotifyFailure"]
    assert notify["Resource"] == "arn:${Partition}:states:::sns:publish"
    assert notify["Parameters"]["TopicArn"] == "${AlertTopicArn}"
    message = notify["Parameters"]["Message"]
    assert message["execution.$"] == "$$.Execution.Id" and message["execution_name.$"] == "$$.Execution.Name"
    assert message["failed_state.$"] == "$.failed_state"
    assert message["cause.$"] == "$.error.Cause" and message["error.$"] == "$.error.Error"
    assert message["reports"] == "s3://${ReportBucketName}/reports/"
    assert message["input"]["folder.$"] == "$.folder"
    assert message["rerun.$"] == "States.Format('make rerun EXECUTION={}', $$.Execution.Id)"
    assert notify["Next"] == "EtlFailed" and states["EtlFailed"]["Type"] == "Fail"
