"""Retention for Glue Python shell's own log groups (/aws-glue/python-jobs/output and /error).

Glue names these groups, and every Python shell job of the account and region writes to them.
An AWS::Logs::LogGroup would make this stack their owner: a second stack (another env) in the
same account would fail to create them, and deleting this stack would delete the logs of every
other job. So a custom resource makes sure they exist (CreateLogGroup, "already exists" is fine)
and sets their retention on every deploy; deleting the stack leaves them alone. With several
stacks in one account, the last deployed one's logRetentionDays applies.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from .config import GLUE_SERVICE_LOG_GROUPS, EtlConfig, retention


class GlueServiceLogGroups(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: EtlConfig, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        arns = []
        for name in GLUE_SERVICE_LOG_GROUPS:
            arn = stack.format_arn(
                service="logs", resource="log-group", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
            )
            arns += [arn, f"{arn}:*"]
        policy = cr.AwsCustomResourcePolicy.from_statements(
            [iam.PolicyStatement(actions=["logs:CreateLogGroup", "logs:PutRetentionPolicy"], resources=arns)]
        )
        # The provider function's own log group (shared by the calls below), with retention and our key.
        provider_logs = logs.LogGroup(
            self,
            "ProviderLogs",
            retention=retention(config.log_retention_days),
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        self.retention_days = config.log_retention_days
        for name in GLUE_SERVICE_LOG_GROUPS:
            suffix = name.rsplit("/", 1)[-1].title()  # Output, Error
            create = cr.AwsCustomResource(
                self,
                f"Create{suffix}",
                on_create=cr.AwsSdkCall(
                    service="CloudWatchLogs",
                    action="createLogGroup",
                    parameters={"logGroupName": name},
                    physical_resource_id=cr.PhysicalResourceId.of(name),
                    ignore_error_codes_matching="ResourceAlreadyExistsException",
                ),
                policy=policy,
                log_group=provider_logs,
                install_latest_aws_sdk=False,
            )
            set_retention = cr.AwsSdkCall(
                service="CloudWatchLogs",
                action="putRetentionPolicy",
                parameters={"logGroupName": name, "retentionInDays": config.log_retention_days},
                physical_resource_id=cr.PhysicalResourceId.of(f"{name}:retention"),
            )
            retain = cr.AwsCustomResource(
                self,
                f"Retention{suffix}",
                on_create=set_retention,
                on_update=set_retention,
                policy=policy,
                log_group=provider_logs,
                install_latest_aws_sdk=False,
            )
            retain.node.add_dependency(create)
