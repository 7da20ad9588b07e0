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
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    assert props["Environment"]["Variables"] == {
        "STATE_MACHINE_ARN": ref(machine_id),
        "RAW_PREFIX": "raw/",
        "DOCTORS_FILENAME": "doctors.xlsx",
        "APPOINTMENTS_FILENAME": "appointments.xlsx",
        "SETTLE_SECONDS": "180",
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
        "LARGE_INPUT_BYTES": str(16 * 1024 * 1024),
    }
    statements = statements_of_role(synth, role_of_function(synth, function_id))
    by_sid = {s["Sid"]: s for s in statements if "Sid" in s}
    assert actions_of(statements) == {
        "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:PutObject",
        "kms:Decrypt", "kms:GenerateDataKey", "logs:CreateLogStream", "logs:PutLogEvents",
    }  # fmt: skip
    assert by_sid["HeadRawUploads"]["Resource"] == {"Fn::Join": ["", [get_att(ids["StorageRawBucket"]), "/raw/*"]]}
    assert by_sid["WritePairClaims"]["Resource"] == {
        "Fn::Join": ["", [get_att(ids["StorageArtifactsBucket"]), "/runs/claims/*"]]
    }
    assert by_sid["TellMissingFromForbidden"]["Resource"] == get_att(ids["StorageRawBucket"])
    # Claims only need to outlive redelivery and the settle window.
    rules = synth.template["Resources"][ids["StorageArtifactsBucket"]]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {"Id": "expire-pair-claims", "Prefix": "runs/claims/", "ExpirationInDays": 30, "Status": "Enabled"} in rules


def test_trigger_lambda_may_only_start_this_state_machine(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    role_id = role_of_function(synth, function_id)
    assert "ManagedPolicyArns" not in synth.template["Resources"][role_id]["Properties"]
    statements = statements_of_role(synth, role_id)
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    log_group = find_id(synth, "AWS::Logs::LogGroup", "TriggerFunctionLogs")
    queue_id, _ = synth.one("AWS::SQS::Queue")
    key_id, _ = synth.one("AWS::KMS::Key")
    assert actions_of(statements) == {
        "states:StartExecution", "logs:CreateLogStream", "logs:PutLogEvents",
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
        else:
            assert statement["Resource"] == get_att(log_group)


def test_state_machine_logs_everything_encrypted_with_tracing(synth: Synth) -> None:
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    props = machine["Properties"]
    log_group = find_id(synth, "AWS::Logs::LogGroup", "StateMachineLogs")
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    destination = props["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
    assert destination == get_att(log_group)
    key_id, _ = synth.one("AWS::KMS::Key")
    assert synth.template["Resources"][log_group]["Properties"]["KmsKeyId"] == get_att(key_id)
    assert props["TracingConfiguration"] == {"Enabled": True}


def test_state_machine_role_runs_only_this_job_and_publishes_only_to_the_topic(synth: Synth) -> None:
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = statements_of_role(synth, role_id)
    topic_id, _ = synth.one("AWS::SNS::Topic")
    job_id, _ = synth.one("AWS::Glue::Job")
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
    (invoke,) = [s for s in statements if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert invoke["Resource"][0] == get_att(resolver_id)


def test_committed_asl_equals_the_synthesized_definition(synth: Synth) -> None:
    from export_asl import ASL_FILE, synthesized_asl

    committed = json.loads(ASL_FILE.read_text(encoding="utf-8"))
    assert synthesized_asl(synth.template) == committed, "stale ASL: run `python infra/export_asl.py`"


def test_asl_settles_resolves_then_runs_or_skips(synth: Synth) -> None:
    from export_asl import synthesized_asl

    asl = synthesized_asl(synth.template)
    states = asl["States"]
    assert asl["StartAt"] == "SettleUploads"
    assert set(states) == {
        "SettleUploads", "ResolveInputs", "RunOrSkip", "NothingToLoad", "RunGlueEtlJob", "EtlSucceeded",
        "ResolveInputsFailed", "GlueJobFailed", "NotifyFailure", "EtlFailed",
    }  # fmt: skip
    assert 0 < asl["TimeoutSeconds"] <= 24 * 3600
    assert states["SettleUploads"] == {
        "Type": "Wait",
        "Comment": states["SettleUploads"]["Comment"],
        "SecondsPath": "$.settle_seconds",
        "Next": "ResolveInputs",
    }
    resolve = states["ResolveInputs"]
    assert resolve["Resource"] == "${ResolveInputsFunctionArn}" and resolve["ResultPath"] == "$.inputs"
    assert resolve["Parameters"]["execution.$"] == "$$.Execution.Id"
    assert resolve["Next"] == "RunOrSkip"
    assert states["RunOrSkip"]["Choices"] == [
        {"Variable": "$.inputs.action", "StringEquals": "run", "Next": "RunGlueEtlJob"}
    ]
    assert states["RunOrSkip"]["Default"] == "NothingToLoad" and states["NothingToLoad"]["Type"] == "Succeed"
    # Only what moto's executor runs: JSONPath, no JSONata, no result selectors.
    text = json.dumps(asl)
    for unsupported in ("QueryLanguage", "JSONata", "ResultSelector", 'Arguments": "{%', "Output"):
        assert unsupported not in text


def test_asl_runs_the_glue_job_sync_with_retries_catch_and_alert(synth: Synth) -> None:
    from export_asl import synthesized_asl

    states = synthesized_asl(synth.template)["States"]
    run = states["RunGlueEtlJob"]
    assert run["Resource"] == "arn:${Partition}:states:::glue:startJobRun.sync"
    assert run["Parameters"] == {
        "JobName": "${GlueJobName}",
        "MaxCapacity.$": "$.inputs.max_capacity",
        "Arguments": {
            "--RAW_BUCKET.$": "$.bucket",
            "--DOCTORS_KEY.$": "$.doctors_key",
            "--APPOINTMENTS_KEY.$": "$.appointments_key",
            "--DOCTORS_VERSION.$": "$.inputs.doctors_version",
            "--APPOINTMENTS_VERSION.$": "$.inputs.appointments_version",
            "--TRIGGER_KEY.$": "$.trigger_key",
            "--TRIGGER_VERSION.$": "$.trigger_version",
        },
    }
    assert run["Retry"] == [
        {
            "ErrorEquals": ["Glue.ConcurrentRunsExceededException"],
            "IntervalSeconds": 60,
            "MaxAttempts": 5,
            "BackoffRate": 2,
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
        },
    ]
    # Both tasks that can fail name themselves, then alert and fail.
    for task, marker in (("ResolveInputs", "ResolveInputsFailed"), ("RunGlueEtlJob", "GlueJobFailed")):
        assert states[task]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": marker}]
        assert states[marker] == {
            "Type": "Pass", "Result": task, "ResultPath": "$.failed_state", "Next": "NotifyFailure"
        }  # fmt: skip
    assert run["Next"] == "EtlSucceeded" and states["EtlSucceeded"]["Type"] == "Succeed"
    notify = states["NotifyFailure"]
    assert notify["Resource"] == "arn:${Partition}:states:::sns:publish"
    assert notify["Parameters"]["TopicArn"] == "${AlertTopicArn}"
    message = notify["Parameters"]["Message"]
    assert message["execution.$"] == "$$.Execution.Id" and message["execution_name.$"] == "$$.Execution.Name"
    assert message["failed_state.$"] == "$.failed_state"
    assert message["cause.$"] == "$.error.Cause" and message["error.$"] == "$.error.Error"
    assert message["reports"] == "s3://${ReportBucketName}/reports/"
    assert message["input"]["trigger_key.$"] == "$.trigger_key"
    assert notify["Next"] == "EtlFailed" and states["EtlFailed"]["Type"] == "Fail"
