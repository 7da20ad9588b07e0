"""Step Functions and CDK pieces shared by the upload workflow (workflow.py, orchestration.py), the
backfill (backfill.py) and the Glue job (etl_job.py): the glue:startJobRun.sync task with its retries,
the SNS alert state, encrypted log groups, the base of the constructs that run the job from a state
machine, and the IAM statements several roles need."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .config import METRIC_NAMESPACE, RAW_PREFIX, EtlConfig, retention, stack_unique

# Errors of the StartJobRun call (not of the job run: a failed run is States.TaskFailed) that a
# later attempt can fix. ConcurrentRunsExceeded (GLUE_BUSY_ERRORS) has its own, slower schedule.
GLUE_TRANSIENT_ERRORS = [
    "Glue.ThrottlingException",
    "Glue.InternalServiceException",
    "Glue.OperationTimeoutException",
    "Glue.AWSGlueException",
]
GLUE_BUSY_ERRORS = ["Glue.ConcurrentRunsExceededException"]


@dataclass(frozen=True)
class Retry:
    """One Retry rule of a Task state; times in seconds, no ``max_delay`` means uncapped."""

    errors: Sequence[str]
    interval: int
    backoff_rate: float
    max_attempts: int
    max_delay: int | None = None


def glue_run_task(
    scope: Construct,
    state_name: str,
    *,
    job_name: str,
    comment: str,
    max_capacity_path: str,
    arguments: Mapping[str, str],
    result_path: str | None,
    retries: Sequence[Retry],
) -> sfn.CustomState:
    """glue:startJobRun.sync as a raw Task state (GlueStartJobRun has neither MaxCapacity nor
    JobRunQueuingEnabled): a busy job queues the run (WAITING) instead of refusing it. ``retries``
    apply in order, each with full jitter so that parallel executions do not retry in step."""
    run_job = sfn.CustomState(
        scope,
        state_name,
        state_json={
            "Type": "Task",
            "Comment": comment,
            "Resource": f"arn:{Stack.of(scope).partition}:states:::glue:startJobRun.sync",
            "Parameters": {
                "JobName": job_name,
                "JobRunQueuingEnabled": True,
                "MaxCapacity.$": max_capacity_path,
                "Arguments": dict(arguments),
            },
            "ResultPath": result_path,
        },
    )
    for retry in retries:
        run_job.add_retry(
            errors=list(retry.errors),
            interval=Duration.seconds(retry.interval),
            backoff_rate=retry.backoff_rate,
            max_attempts=retry.max_attempts,
            max_delay=None if retry.max_delay is None else Duration.seconds(retry.max_delay),
            jitter_strategy=sfn.JitterType.FULL,
        )
    return run_job


def notify_state(
    scope: Construct, state_name: str, *, topic: sns.ITopic, comment: str, summary: str, details: Mapping[str, Any]
) -> tasks.SnsPublish:
    """The alert to the topic: subject ``summary``; the message has the summary, the execution's id
    and name, then ``details``. Its result goes to $.notification (the input passes on)."""
    return tasks.SnsPublish(
        scope,
        state_name,
        state_name=state_name,
        comment=comment,
        topic=topic,
        subject=summary,
        message=sfn.TaskInput.from_object(
            {
                "summary": summary,
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                "execution_name": sfn.JsonPath.string_at("$$.Execution.Name"),
                **details,
            }
        ),
        result_path="$.notification",
    )


def encrypted_log_group(
    scope: Construct, construct_id: str, name: str, *, config: EtlConfig, key: kms.IKey
) -> logs.LogGroup:
    """`name-<stack id>`, encrypted with the stack key: prod retains its log groups on teardown, and a
    redeploy must not collide with them."""
    return logs.LogGroup(
        scope,
        construct_id,
        log_group_name=stack_unique(name),
        retention=retention(config.log_retention_days),
        encryption_key=key,
        removal_policy=config.removal_policy,
    )


def glue_run_policy(job_arn: str) -> list[iam.PolicyStatement]:
    """What glue:startJobRun.sync needs (as GlueStartJobRun grants it), on this one job."""
    return [
        iam.PolicyStatement(
            actions=["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"],
            resources=[job_arn],
        )
    ]


def put_metric_statement(sid: str = "PutPipelineMetrics") -> iam.PolicyStatement:
    """cloudwatch:PutMetricData has no resource-level permissions: limited to the project's namespace."""
    return iam.PolicyStatement(
        sid=sid,
        actions=["cloudwatch:PutMetricData"],
        resources=["*"],
        conditions={"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}},
    )


def key_via_service_statement(
    stack: Stack, key: kms.IKey, service: str, actions: list[str], sid: str | None = None
) -> iam.PolicyStatement:
    """``actions`` on the stack key, only through ``service`` (s3, sns, ...) in this region."""
    return iam.PolicyStatement(
        sid=sid,
        actions=actions,
        resources=[key.key_arn],
        conditions={"StringEquals": {"kms:ViaService": f"{service}.{stack.region}.amazonaws.com"}},
    )


def read_raw_statement(sid: str, raw_bucket: s3.IBucket) -> iam.PolicyStatement:
    """Read the uploaded workbooks (any version) under raw/."""
    return iam.PolicyStatement(
        sid=sid,
        actions=["s3:GetObject", "s3:GetObjectVersion"],
        resources=[raw_bucket.arn_for_objects(f"{RAW_PREFIX}*")],
    )


class GlueFlow(Construct):
    """Base of the constructs whose state machine runs the Glue job and alerts on the topic
    (Orchestration, Backfill): their common inputs, and their log groups, Lambda functions and
    state machine made alike. A subclass builds its resources in ``build``."""

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
        self.build(raw_bucket=raw_bucket, artifacts_bucket=artifacts_bucket, job_name=job_name, topic=topic)

    def build(self, *, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket, job_name: str, topic: sns.ITopic) -> None:
        raise NotImplementedError

    def log_group(self, construct_id: str, name: str) -> logs.LogGroup:
        """An encrypted, stack-unique log group of this construct (see ``encrypted_log_group``)."""
        return encrypted_log_group(self, construct_id, name, config=self.config, key=self.key)

    def python_function(
        self,
        construct_id: str,
        *,
        role_description: str,
        statements: Sequence[iam.PolicyStatement] = (),
        **props: Any,
    ) -> lambda_.Function:
        """A Python Lambda function ``<id>`` with its own role ``<id>Role`` (no managed policies), its
        log group ``<id>Logs`` (/aws/lambda/<function_name>) and, given ``statements``, the policy
        ``<id>Policy``. ``props`` go to lambda_.Function (function_name, handler, code, ...)."""
        log_group = self.log_group(f"{construct_id}Logs", f"/aws/lambda/{props['function_name']}")
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=role_description,
        )
        function = lambda_.Function(
            self, construct_id, runtime=lambda_.Runtime.PYTHON_3_14, role=role, log_group=log_group, **props
        )
        log_group.grant_write(role)
        if statements:
            policy = iam.Policy(self, f"{construct_id}Policy", roles=[role])
            policy.add_statements(*statements)
        return function

    def logged_state_machine(
        self, *, name: str, comment: str, definition: sfn.IChainable, job_name: str, timeout: Duration | None = None
    ) -> sfn.StateMachine:
        """The STANDARD state machine ``name`` (X-Ray tracing, every event with its data logged to
        the log group StateMachineLogs, /aws/vendedlogs/states/<name>), allowed to run ``job_name``."""
        self.state_machine_log_group = self.log_group("StateMachineLogs", f"/aws/vendedlogs/states/{name}")
        state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=name,
            comment=comment,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            timeout=timeout,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.state_machine_log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        job_arn = Stack.of(self).format_arn(
            service="glue", resource="job", resource_name=job_name, arn_format=ArnFormat.SLASH_RESOURCE_NAME
        )
        for statement in glue_run_policy(job_arn):
            state_machine.add_to_role_policy(statement)
        return state_machine
