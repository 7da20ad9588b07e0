"""Alerts, alarms, dashboard and log groups of the default (dev) stack."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match
from conftest import (
    Synth,
    as_list,
    find_id,
    get_att,
    ref,
    render_name,
)
from healthtech_infra.config import METRIC_NAMESPACE

from healthtech_etl.contract import DEFAULT_METRICS, MetricLevels

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------- monitoring


def test_alert_topic_is_kms_encrypted_and_tls_only_without_default_subscription(synth: Synth) -> None:
    topic_id, topic = synth.one("AWS::SNS::Topic")
    key_id, _ = synth.one("AWS::KMS::Key")
    assert topic["Properties"]["KmsMasterKeyId"] == get_att(key_id)
    synth.assertions.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [ref(topic_id)],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            },
        },
    )
    synth.assertions.resource_count_is("AWS::SNS::Subscription", 0)


def test_topic_policy_lets_only_this_stacks_alarms_publish(synth: Synth) -> None:
    topic_id, _ = synth.one("AWS::SNS::Topic")
    _, policy = synth.one("AWS::SNS::TopicPolicy")
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": "AllowThisStacksAlarmsToPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": ref(topic_id),
            "Condition": {
                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                "ArnLike": {
                    "aws:SourceArn": {
                        "Fn::Join": [
                            "",
                            [
                                "arn:", {"Ref": "AWS::Partition"}, ":cloudwatch:", {"Ref": "AWS::Region"}, ":",
                                {"Ref": "AWS::AccountId"}, ":alarm:healthtech-etl-dev-*",
                            ],
                        ]
                    }
                },
            },
        }
    ]  # fmt: skip


def test_every_alarm_notifies_the_topic_and_matches_the_topic_policy(synth: Synth) -> None:
    topic_id, _ = synth.one("AWS::SNS::Topic")
    alarms = synth.resources("AWS::CloudWatch::Alarm")
    # workflow x2, trigger errors, dead letters, missing partner, misnamed uploads, 5 quality metrics x2 levels
    assert len(alarms) == 16
    for logical_id, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [ref(topic_id)], logical_id
        # The name is what aws:SourceArn's pattern (alarm:healthtech-etl-dev-*) matches.
        assert props["AlarmName"].startswith("healthtech-etl-dev-"), logical_id


def test_glue_python_shell_log_groups_get_retention_without_being_owned(synth: Synth) -> None:
    names = [g["Properties"].get("LogGroupName") for g in synth.resources("AWS::Logs::LogGroup").values()]
    assert not [n for n in names if isinstance(n, str) and n.startswith("/aws-glue/python-jobs")]
    calls = [
        json.loads(r["Properties"][phase])
        for r in synth.resources("Custom::AWS").values()
        for phase in ("Create", "Update")
        if isinstance(r["Properties"].get(phase), str)  # (the db-setup start names its job: a Fn::Join)
    ]
    for group in ("/aws-glue/python-jobs/output", "/aws-glue/python-jobs/error"):
        created = [c for c in calls if c["action"] == "createLogGroup" and c["parameters"]["logGroupName"] == group]
        assert created and all(c["ignoreErrorCodesMatching"] == "ResourceAlreadyExistsException" for c in created)
        retention = [c for c in calls if c["action"] == "putRetentionPolicy" and c["parameters"]["logGroupName"] == group]
        assert len(retention) == 2 and all(c["parameters"]["retentionInDays"] == 30 for c in retention)
    # Never a Delete call: the groups are shared by every Python shell job of the account.
    assert not [r for r in synth.resources("Custom::AWS").values() if "Delete" in r["Properties"]]


def test_kms_key_rotates_and_lets_cloudwatch_use_it(synth: Synth) -> None:
    _, key = synth.one("AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    principals = json.dumps([s.get("Principal") for s in key["Properties"]["KeyPolicy"]["Statement"]])
    assert "cloudwatch.amazonaws.com" in principals and "logs." in principals
    # Alarms publish to the encrypted topic: CloudWatch may use the key, for this account only.
    (cloudwatch,) = [
        s for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert sorted(as_list(cloudwatch["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def alarms_by_metric(synth: Synth) -> dict[str, dict[str, Any]]:
    return {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
    }


def test_workflow_and_lambda_alarms_notify_the_topic(synth: Synth) -> None:
    topic_id, _ = synth.one("AWS::SNS::Topic")
    alarms = alarms_by_metric(synth)
    for metric, namespace in (
        ("ExecutionsFailed", "AWS/States"),
        ("ExecutionsTimedOut", "AWS/States"),
        ("Errors", "AWS/Lambda"),
    ):
        alarm = alarms[metric]
        assert alarm["Namespace"] == namespace
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
        assert alarm["AlarmActions"] == [ref(topic_id)]


@pytest.mark.parametrize("levels", DEFAULT_METRICS, ids=lambda levels: levels.key)
def test_data_quality_alarms_use_the_default_contract_levels(synth: Synth, levels: MetricLevels) -> None:
    """Two alarms per metric, at the levels of the default quality contract the job judges with."""
    metric = "".join(part.title() for part in levels.key.split("_"))
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()
              if a["Properties"]["MetricName"] == metric}
    topic_id, _ = synth.one("AWS::SNS::Topic")
    assert sorted(alarms) == [f"healthtech-etl-dev-dq-{metric}-critical", f"healthtech-etl-dev-dq-{metric}-warning"]
    for severity, level in (("warning", levels.warning), ("critical", levels.critical)):
        alarm = alarms[f"healthtech-etl-dev-dq-{metric}-{severity}"]
        assert alarm["Namespace"] == METRIC_NAMESPACE and "Dimensions" not in alarm
        assert alarm["ComparisonOperator"] == ("LessThanThreshold" if levels.alert_below else "GreaterThanThreshold")
        assert alarm["Threshold"] == level and alarm["AlarmDescription"].startswith(severity.upper())
        assert alarm["Statistic"] == ("Minimum" if levels.alert_below else "Maximum")
        assert alarm["TreatMissingData"] == "notBreaching" and alarm["AlarmActions"] == [ref(topic_id)]


def test_dashboard_shows_workflow_quality_rows_and_database(synth: Synth) -> None:
    _, dashboard = synth.one("AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for needle in (
        "IdCompleteness",
        "DuplicateRate",
        "RowsLoaded",
        "RowsRejected",
        "ExecutionsFailed",
        "CPUUtilization",
        "AcceptanceRate",
        "/aws-glue/python-jobs/output",
        "/aws-glue/python-jobs/error",
        "ApproximateNumberOfMessagesVisible",
    ):
        assert needle in body
    # The job's own log group by reference (its name ends in the stack's id).
    assert json.dumps(ref(find_id(synth, "AWS::Logs::LogGroup", "EtlJobLogs"))) in body


def test_every_log_group_has_retention_and_the_stack_key(synth: Synth) -> None:
    key_id, _ = synth.one("AWS::KMS::Key")
    log_groups = synth.resources("AWS::Logs::LogGroup")
    assert len(log_groups) >= 5
    for logical_id, group in log_groups.items():
        assert group["Properties"]["RetentionInDays"] > 0, logical_id
        assert group["Properties"]["KmsKeyId"] == get_att(key_id), logical_id
    # Every Lambda we own logs to one of these groups (retention set, not "never expire").
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    assert (
        synth.template["Resources"][function_id]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        in log_groups
    )
    _, rds_instance = synth.one("AWS::RDS::DBInstance")
    names = [render_name(g["Properties"].get("LogGroupName")) for g in log_groups.values()]
    assert f"/aws/rds/instance/{render_name(rds_instance['Properties']['DBInstanceIdentifier'])}/postgresql" in names
