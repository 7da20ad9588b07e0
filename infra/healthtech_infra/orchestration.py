"""Orchestration: S3 upload -> trigger Lambda -> Step Functions (the states are in workflow.py: find and
claim the export folder's pair, Glue job .sync, release a failed run's claim) -> failures -> SNS alert.
docs/aws.md "Flow" has the why."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn

from .config import CLAIM_PREFIX, LAMBDA_DIR, METRIC_NAMESPACE, RAW_PREFIX, REPORT_PREFIX
from .sfn_parts import (
    GlueFlow,
    glue_run_policy,
    key_via_service_statement,
    put_metric_statement,
    read_raw_statement,
)
from .workflow import GLUE_TRANSIENT_ERRORS, build_definition, glue_job_task

__all__ = ["GLUE_TRANSIENT_ERRORS", "Orchestration", "glue_job_task", "glue_run_policy", "put_metric_statement"]

DOCTORS_FILENAME = "doctors.xlsx"
APPOINTMENTS_FILENAME = "appointments.xlsx"
RESULT_PREFIX = f"{REPORT_PREFIX}/_executions/"  # the job's result of each execution (not a source: '_')


class Orchestration(GlueFlow):
    def build(self, *, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket, job_name: str, topic: sns.ITopic) -> None:
        code = lambda_.Code.from_asset(str(LAMBDA_DIR), exclude=["__pycache__", "*.pyc", "tests"])
        self.resolver = self._resolver(code, raw_bucket, artifacts_bucket)
        self.state_machine = self._state_machine(job_name, topic, artifacts_bucket)
        self.function = self._trigger(code)
        raw_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.function),
            s3.NotificationKeyFilter(prefix=RAW_PREFIX, suffix=".xlsx"),
        )

    def _resolver(self, code: lambda_.Code, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket) -> lambda_.Function:
        """ResolveInputs: pins and claims the pair of workbooks (lambda/resolve_inputs.py)."""
        config = self.config
        return self.python_function(
            "ResolverFunction",
            role_description="healthtech-etl resolve-inputs: list export folders, claim and release pairs, read results",
            statements=resolver_statements(Stack.of(self), raw_bucket, artifacts_bucket, self.key),
            function_name=f"{config.name_prefix}-resolve-inputs",
            description="Finds and claims an export folder's pair, releases a failed run's claim, links reports",
            handler="resolve_inputs.handler",
            code=code,
            memory_size=128,
            timeout=Duration.seconds(30),
            environment={
                "CLAIM_BUCKET": artifacts_bucket.bucket_name,
                "CLAIM_PREFIX": CLAIM_PREFIX,
                "RESULT_PREFIX": RESULT_PREFIX,
                "LARGE_INPUT_BYTES": str(config.large_input_mb * 1024 * 1024),
                "DOCTORS_FILENAME": DOCTORS_FILENAME,
                "APPOINTMENTS_FILENAME": APPOINTMENTS_FILENAME,
                "METRIC_NAMESPACE": METRIC_NAMESPACE,
            },
        )

    def _state_machine(self, job_name: str, topic: sns.ITopic, artifacts_bucket: s3.IBucket) -> sfn.StateMachine:
        config = self.config
        state_machine = self.logged_state_machine(
            name=config.name_prefix,
            comment="healthtech-etl: claim an export folder's pair once, run the Glue ETL job, alert on failure",
            definition=build_definition(
                self,
                job_name=job_name,
                topic=topic,
                resolver=self.resolver,
                report_bucket_name=artifacts_bucket.bucket_name,
            ),
            job_name=job_name,
            # A lone workbook's execution waits for its partner first.
            timeout=Duration.minutes(config.state_machine_timeout_minutes + config.partner_wait_minutes),
        )
        # The alert topic is KMS-encrypted: publishing needs the key (through SNS only).
        state_machine.add_to_role_policy(key_via_service_statement(
            Stack.of(self), self.key, "sns", ["kms:GenerateDataKey", "kms:Decrypt"], sid="UseAlertTopicKey"
        ))
        return state_machine

    def _trigger(self, code: lambda_.Code) -> lambda_.Function:
        """The S3 trigger: async invocations; after Lambda's own retries they land in a DLQ."""
        config = self.config
        self.dead_letters = sqs.Queue(
            self,
            "TriggerFailures",
            queue_name=f"{config.name_prefix}-trigger-failures",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        # An explicit role (no AWSLambdaBasicExecutionRole): its log group, and starting this one machine.
        function = self.python_function(
            "TriggerFunction",
            role_description="healthtech-etl trigger: write its logs, start the ETL state machine, count misnamed uploads",
            function_name=f"{config.name_prefix}-trigger",
            description="Starts the ETL state machine when a workbook lands in raw/<source>/<export>/",
            handler="handler.handler",
            code=code,
            memory_size=256,
            timeout=Duration.seconds(30),
            # None by default: reserving any fails on a new account (quota 10, 10 must stay unreserved).
            reserved_concurrent_executions=config.trigger_reserved_concurrency,
            # Async invocations from S3: 2 retries, then the event goes to the queue (alarmed).
            retry_attempts=2,
            max_event_age=Duration.hours(6),
            on_failure=destinations.SqsDestination(self.dead_letters),
            environment={
                "STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
                "RAW_PREFIX": RAW_PREFIX,
                "DOCTORS_FILENAME": DOCTORS_FILENAME,
                "APPOINTMENTS_FILENAME": APPOINTMENTS_FILENAME,
                "PARTNER_WAIT_SECONDS": str(config.partner_wait_minutes * 60),
                "METRIC_NAMESPACE": METRIC_NAMESPACE,
                "LOG_LEVEL": "INFO",
            },
        )
        self.state_machine.grant_start_execution(function)
        function.add_to_role_policy(put_metric_statement())
        return function

def resolver_statements(
    stack: Stack, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket, key: kms.IKey
) -> list[iam.PolicyStatement]:
    return [
        read_raw_statement("HeadRawUploads", raw_bucket),
        # Lists the export folder; and without ListBucket, HeadObject of a missing key is 403, not 404
        # (a HEAD carries no s3:prefix, so no prefix condition here; it lists names, not content).
        iam.PolicyStatement(
            sid="TellMissingFromForbidden",
            actions=["s3:ListBucket"],
            resources=[raw_bucket.bucket_arn],
        ),
        iam.PolicyStatement(
            sid="ClaimAndReleasePairs",
            actions=["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
            resources=[artifacts_bucket.arn_for_objects(f"{CLAIM_PREFIX}*")],
        ),
        iam.PolicyStatement(
            sid="ReadRunResults",
            actions=["s3:GetObject"],
            resources=[artifacts_bucket.arn_for_objects(f"{RESULT_PREFIX}*")],
        ),
        put_metric_statement(),
        key_via_service_statement(stack, key, "s3", ["kms:Decrypt", "kms:GenerateDataKey"], sid="UseDataKeyThroughS3"),
    ]
