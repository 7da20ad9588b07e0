"""Orchestration: S3 upload -> trigger Lambda -> Step Functions (settle, resolve and claim the pair of
workbooks, Glue job .sync with the chosen capacity) -> failures -> SNS alert. README "Flow" has the why."""

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
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .config import CLAIM_PREFIX, LAMBDA_DIR, RAW_PREFIX, REPORT_PREFIX, EtlConfig, retention, stack_unique

STATE_SETTLE = "SettleUploads"
STATE_RESOLVE = "ResolveInputs"
STATE_CHOOSE = "RunOrSkip"
STATE_SKIPPED = "NothingToLoad"
STATE_RUN_JOB = "RunGlueEtlJob"
STATE_RESOLVE_FAILED = "ResolveInputsFailed"
STATE_JOB_FAILED = "GlueJobFailed"
STATE_NOTIFY = "NotifyFailure"
STATE_FAILED = "EtlFailed"
STATE_SUCCEEDED = "EtlSucceeded"

# State machine input (sent by the Lambda) and the resolved pair -> Glue job run argument.
RUN_ARGUMENTS = {
    "--RAW_BUCKET": "$.bucket",
    "--DOCTORS_KEY": "$.doctors_key",
    "--APPOINTMENTS_KEY": "$.appointments_key",
    "--DOCTORS_VERSION": "$.inputs.doctors_version",
    "--APPOINTMENTS_VERSION": "$.inputs.appointments_version",
    "--TRIGGER_KEY": "$.trigger_key",
    "--TRIGGER_VERSION": "$.trigger_version",
}
# Errors of the StartJobRun call (not of the job run: a failed run is States.TaskFailed) that a
# later attempt can fix. ConcurrentRunsExceeded has its own, slower schedule.
GLUE_TRANSIENT_ERRORS = [
    "Glue.ThrottlingException",
    "Glue.InternalServiceException",
    "Glue.OperationTimeoutException",
    "Glue.AWSGlueException",
]


def glue_run_policy(job_arn: str) -> list[iam.PolicyStatement]:
    """What glue:startJobRun.sync needs (as GlueStartJobRun grants it), on this one job."""
    return [
        iam.PolicyStatement(
            actions=["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"],
            resources=[job_arn],
        )
    ]


def build_definition(
    scope: Construct,
    *,
    job_name: str,
    topic: sns.ITopic,
    resolver: lambda_.IFunction,
    report_bucket_name: str,
) -> sfn.IChainable:
    """The ETL workflow, kept to plain Wait/Task/Choice/Pass/Retry/Catch/Fail/Succeed with
    JSONPath (runs on moto too): settle, pin and claim the pair, run the job, alert on failure."""
    settle = sfn.Wait(
        scope,
        STATE_SETTLE,
        state_name=STATE_SETTLE,
        comment="Give the other workbook of a pair time to arrive (settle_seconds from the trigger)",
        time=sfn.WaitTime.seconds_path("$.settle_seconds"),
    )
    resolve = _resolve_state(scope, resolver)
    run_job = _run_job_state(scope, job_name)
    notify = _notify_state(scope, topic, report_bucket_name)
    failed = sfn.Fail(
        scope,
        STATE_FAILED,
        state_name=STATE_FAILED,
        error="EtlJobFailed",
        cause="The ETL run failed; the alert topic has the details",
    )
    alert = notify.next(failed)
    for state, name, pass_id in ((resolve, STATE_RESOLVE, STATE_RESOLVE_FAILED), (run_job, STATE_RUN_JOB, STATE_JOB_FAILED)):
        # Name the failing state for the alert ($$.State.Name would be NotifyFailure's own).
        remember = sfn.Pass(
            scope,
            pass_id,
            state_name=pass_id,
            result=sfn.Result.from_string(name),
            result_path="$.failed_state",
        )
        state.add_catch(remember.next(alert), errors=["States.ALL"], result_path="$.error")
    succeeded = sfn.Succeed(scope, STATE_SUCCEEDED, state_name=STATE_SUCCEEDED)
    skipped = sfn.Succeed(
        scope,
        STATE_SKIPPED,
        state_name=STATE_SKIPPED,
        comment="Another execution loads this pair, or the other workbook is not there yet",
    )
    choose = (
        sfn.Choice(scope, STATE_CHOOSE, state_name=STATE_CHOOSE)
        .when(sfn.Condition.string_equals("$.inputs.action", "run"), run_job.next(succeeded))
        .otherwise(skipped)
    )
    return settle.next(resolve).next(choose)


def _resolve_state(scope: Construct, resolver: lambda_.IFunction) -> tasks.LambdaInvoke:
    return tasks.LambdaInvoke(
        scope,
        STATE_RESOLVE,
        state_name=STATE_RESOLVE,
        comment="Pin the latest version of both workbooks, claim that pair once, pick the capacity",
        lambda_function=resolver,
        payload=sfn.TaskInput.from_object(
            {
                "bucket": sfn.JsonPath.string_at("$.bucket"),
                "doctors_key": sfn.JsonPath.string_at("$.doctors_key"),
                "appointments_key": sfn.JsonPath.string_at("$.appointments_key"),
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
            }
        ),
        payload_response_only=True,
        retry_on_service_exceptions=True,
        result_path="$.inputs",
    )


def _run_job_state(scope: Construct, job_name: str) -> sfn.CustomState:
    """A raw Task state: GlueStartJobRun has no MaxCapacity, and the capacity is chosen per run."""
    run_job = sfn.CustomState(
        scope,
        STATE_RUN_JOB,
        state_json={
            "Type": "Task",
            "Comment": "Run the Glue ETL job on the pinned pair and wait for it to finish",
            "Resource": f"arn:{Stack.of(scope).partition}:states:::glue:startJobRun.sync",
            "Parameters": {
                "JobName": job_name,
                "MaxCapacity.$": "$.inputs.max_capacity",
                "Arguments": {f"{arg}.$": path for arg, path in RUN_ARGUMENTS.items()},
            },
            "ResultPath": "$.glue",
        },
    )
    # Another upload while a run is in progress (max concurrent runs = 1): wait and try again.
    run_job.add_retry(
        errors=["Glue.ConcurrentRunsExceededException"],
        interval=Duration.seconds(60),
        backoff_rate=2,
        max_attempts=5,
    )
    run_job.add_retry(errors=GLUE_TRANSIENT_ERRORS, interval=Duration.seconds(15), backoff_rate=2, max_attempts=4)
    return run_job


def _notify_state(scope: Construct, topic: sns.ITopic, report_bucket_name: str) -> tasks.SnsPublish:
    return tasks.SnsPublish(
        scope,
        STATE_NOTIFY,
        state_name=STATE_NOTIFY,
        comment="Alert the on-call address: which run, which state, which error, where the reports are",
        topic=topic,
        subject="HealthTech ETL run failed",
        message=sfn.TaskInput.from_object(
            {
                "summary": "HealthTech ETL run failed",
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                "execution_name": sfn.JsonPath.string_at("$$.Execution.Name"),
                "failed_state": sfn.JsonPath.string_at("$.failed_state"),
                "error": sfn.JsonPath.string_at("$.error.Error"),
                "cause": sfn.JsonPath.string_at("$.error.Cause"),
                "input": {
                    "bucket": sfn.JsonPath.string_at("$.bucket"),
                    "doctors_key": sfn.JsonPath.string_at("$.doctors_key"),
                    "appointments_key": sfn.JsonPath.string_at("$.appointments_key"),
                    "trigger_key": sfn.JsonPath.string_at("$.trigger_key"),
                    "trigger_version": sfn.JsonPath.string_at("$.trigger_version"),
                },
                # The job writes each run's report (also of a failed load) under <prefix>/<run_id>/.
                "reports": f"s3://{report_bucket_name}/{REPORT_PREFIX}/",
            }
        ),
        result_path="$.notification",
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
            description="healthtech-etl resolve-inputs: read workbook versions, write pair claims",
        )
        resolver = lambda_.Function(
            self,
            "ResolverFunction",
            function_name=f"{config.name_prefix}-resolve-inputs",
            description="Pins the latest pair of workbooks for one ETL execution and claims it once",
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
                "LARGE_INPUT_BYTES": str(config.large_input_mb * 1024 * 1024),
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
            comment="healthtech-etl: settle, pin the pair of workbooks, run the Glue ETL job once, alert on failure",
            definition_body=sfn.DefinitionBody.from_chainable(
                build_definition(
                    self,
                    job_name=job_name,
                    topic=topic,
                    resolver=self.resolver,
                    report_bucket_name=artifacts_bucket.bucket_name,
                )
            ),
            timeout=Duration.minutes(config.state_machine_timeout_minutes),
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
            description="healthtech-etl trigger: write its logs, start the ETL state machine",
        )
        function = lambda_.Function(
            self,
            "TriggerFunction",
            function_name=f"{config.name_prefix}-trigger",
            description="Starts the ETL state machine when a workbook lands under raw/",
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
                "DOCTORS_FILENAME": "doctors.xlsx",
                "APPOINTMENTS_FILENAME": "appointments.xlsx",
                "SETTLE_SECONDS": str(config.settle_seconds),
                "LOG_LEVEL": "INFO",
            },
        )
        self.function_log_group.grant_write(role)
        self.state_machine.grant_start_execution(function)
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
        # Without ListBucket, HeadObject of a missing key is 403 instead of 404 (a HEAD
        # carries no s3:prefix, so no prefix condition here; it lists names, not content).
        iam.PolicyStatement(
            sid="TellMissingFromForbidden",
            actions=["s3:ListBucket"],
            resources=[raw_bucket.bucket_arn],
        ),
        iam.PolicyStatement(
            sid="WritePairClaims",
            actions=["s3:PutObject"],
            resources=[artifacts_bucket.arn_for_objects(f"{CLAIM_PREFIX}*")],
        ),
        iam.PolicyStatement(
            sid="UseDataKeyThroughS3",
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=[key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}},
        ),
    ]
