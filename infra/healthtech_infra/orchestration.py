"""Orchestration: S3 upload -> trigger Lambda -> Step Functions (the states are in workflow.py: find and
claim the export folder's pair, Glue job .sync, release a failed run's claim) -> failures -> SNS alert.
docs/aws.md "Flow" has the why."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from .config import (
    CLAIM_PREFIX,
    LAMBDA_DIR,
    METRIC_NAMESPACE,
    RAW_PREFIX,
    REPORT_PREFIX,
    EtlConfig,
    retention,
    stack_unique,
)
from .workflow import GLUE_TRANSIENT_ERRORS, build_definition, glue_job_task

__all__ = ["GLUE_TRANSIENT_ERRORS", "Orchestration", "glue_job_task", "glue_run_policy", "put_metric_statement"]

DOCTORS_FILENAME = "doctors.xlsx"
APPOINTMENTS_FILENAME = "appointments.xlsx"
RESULT_PREFIX = f"{REPORT_PREFIX}/_executions/"  # the job's result of each execution (not a source: '_')



def glue_run_policy(job_arn: str) -> list[iam.PolicyStatement]:
    """What glue:startJobRun.sync needs (as GlueStartJobRun grants it), on this one job."""
    return [
        iam.PolicyStatement(
            actions=["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"],
            resources=[job_arn],
        )
    ]


def put_metric_statement() -> iam.PolicyStatement:
    """cloudwatch:PutMetricData has no resource-level permissions: limited to the project's namespace."""
    return iam.PolicyStatement(
        sid="PutPipelineMetrics",
        actions=["cloudwatch:PutMetricData"],
        resources=["*"],
        conditions={"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}},
    )


class Orchestration(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EtlConfig,
        raw_bucket: s3.IBucket,
        artifacts_bucket: s3.IBucket,
        job_name: str,
        topic: sns.ITopic,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.key = key
        code = lambda_.Code.from_asset(str(LAMBDA_DIR), exclude=["__pycache__", "*.pyc", "tests"])
        self.resolver = self._resolver(code, raw_bucket, artifacts_bucket)
        self.state_machine = self._state_machine(job_name, topic, artifacts_bucket)
        self.function = self._trigger(code)
        raw_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.function),
            s3.NotificationKeyFilter(prefix=RAW_PREFIX, suffix=".xlsx"),
        )

    def _log_group(self, construct_id: str, name: str) -> logs.LogGroup:
        """`name-<stack id>`: prod retains its log groups on teardown, and a redeploy must not collide."""
        return logs.LogGroup(
            self,
            construct_id,
            log_group_name=stack_unique(name),
            retention=retention(self.config.log_retention_days),
            encryption_key=self.key,
            removal_policy=self.config.removal_policy,
        )

    def _resolver(self, code: lambda_.Code, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket) -> lambda_.Function:
        """ResolveInputs: pins and claims the pair of workbooks (lambda/resolve_inputs.py)."""
        config = self.config
        self.resolver_log_group = self._log_group(
            "ResolverFunctionLogs", f"/aws/lambda/{config.name_prefix}-resolve-inputs"
        )
        role = iam.Role(
            self,
            "ResolverFunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="healthtech-etl resolve-inputs: list export folders, claim and release pairs, read results",
        )
        resolver = lambda_.Function(
            self,
            "ResolverFunction",
            function_name=f"{config.name_prefix}-resolve-inputs",
            description="Finds and claims an export folder's pair, releases a failed run's claim, links reports",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="resolve_inputs.handler",
            code=code,
            role=role,
            log_group=self.resolver_log_group,
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
        self.resolver_log_group.grant_write(role)
        policy = iam.Policy(self, "ResolverFunctionPolicy", roles=[role])
        policy.add_statements(*resolver_statements(Stack.of(self), raw_bucket, artifacts_bucket, self.key))
        return resolver

    def _state_machine(self, job_name: str, topic: sns.ITopic, artifacts_bucket: s3.IBucket) -> sfn.StateMachine:
        config, stack = self.config, Stack.of(self)
        self.state_machine_log_group = self._log_group(
            "StateMachineLogs", f"/aws/vendedlogs/states/{config.name_prefix}"
        )
        state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=config.name_prefix,
            comment="healthtech-etl: claim an export folder's pair once, run the Glue ETL job, alert on failure",
            definition_body=sfn.DefinitionBody.from_chainable(
                build_definition(
                    self,
                    job_name=job_name,
                    topic=topic,
                    resolver=self.resolver,
                    report_bucket_name=artifacts_bucket.bucket_name,
                )
            ),
            # A lone workbook's execution waits for its partner first.
            timeout=Duration.minutes(config.state_machine_timeout_minutes + config.partner_wait_minutes),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.state_machine_log_group,
                level=sfn.LogLevel.ALL,
                include_execution_data=True,
            ),
        )
        job_arn = stack.format_arn(
            service="glue", resource="job", resource_name=job_name, arn_format=ArnFormat.SLASH_RESOURCE_NAME
        )
        for statement in glue_run_policy(job_arn):
            state_machine.add_to_role_policy(statement)
        # The alert topic is KMS-encrypted: publishing needs the key (through SNS only).
        state_machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="UseAlertTopicKey",
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[self.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"sns.{stack.region}.amazonaws.com"}},
            )
        )
        return state_machine

    def _trigger(self, code: lambda_.Code) -> lambda_.Function:
        """The S3 trigger: async invocations; after Lambda's own retries they land in a DLQ."""
        config = self.config
        self.function_log_group = self._log_group("TriggerFunctionLogs", f"/aws/lambda/{config.name_prefix}-trigger")
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
        role = iam.Role(
            self,
            "TriggerFunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="healthtech-etl trigger: write its logs, start the ETL state machine, count misnamed uploads",
        )
        function = lambda_.Function(
            self,
            "TriggerFunction",
            function_name=f"{config.name_prefix}-trigger",
            description="Starts the ETL state machine when a workbook lands in raw/<source>/<export>/",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="handler.handler",
            code=code,
            role=role,
            log_group=self.function_log_group,
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
        self.function_log_group.grant_write(role)
        self.state_machine.grant_start_execution(function)
        role.add_to_policy(put_metric_statement())
        return function


def resolver_statements(
    stack: Stack, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket, key: kms.IKey
) -> list[iam.PolicyStatement]:
    return [
        iam.PolicyStatement(
            sid="HeadRawUploads",
            actions=["s3:GetObject", "s3:GetObjectVersion"],
            resources=[raw_bucket.arn_for_objects(f"{RAW_PREFIX}*")],
        ),
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
        iam.PolicyStatement(
            sid="UseDataKeyThroughS3",
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=[key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}},
        ),
    ]
