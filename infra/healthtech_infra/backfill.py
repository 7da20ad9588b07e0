"""Backfill: load many exports already in S3 with the same Glue job, as a Step Functions Distributed Map.

PlanBackfill (lambda/backfill_plan.py) lists raw/<source>/<export>/, dates and sorts each clinic's
exports and writes the plan to S3; the Distributed Map reads it (ItemReader), one child execution
per clinic, at most ``backfillConcurrency`` at once; inside, an inline Map with MaxConcurrency 1
runs the clinic's exports in date order, each a ``glue:startJobRun.sync`` in merge mode. A failed
export stops its clinic (a later export must not be loaded before it), not the other clinics; the
execution then alerts and ends FAILED naming them. docs/aws.md "Backfill" has the why.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .config import LAMBDA_DIR, RAW_PREFIX
from .sfn_parts import (
    GLUE_BUSY_ERRORS,
    GLUE_TRANSIENT_ERRORS,
    GlueFlow,
    Retry,
    glue_run_task,
    key_via_service_statement,
    notify_state,
)

MANIFEST_PREFIX = "backfills/"
STATE_PLAN = "PlanBackfill"
STATE_CLINICS = "BackfillClinics"
STATE_EXPORTS = "LoadExportsInDateOrder"
STATE_RUN_JOB = "RunGlueEtlJob"
STATE_CLINIC_LOADED = "ClinicLoaded"
STATE_CLINIC_FAILED = "ClinicFailed"
STATE_CHECK = "CheckClinics"
STATE_ANY_FAILED = "AnyClinicFailed"
STATE_COLLECT = "CollectFailedClinics"
STATE_NOTIFY = "NotifyBackfillFailure"
STATE_FAILED = "BackfillFailed"
STATE_SUCCEEDED = "BackfillSucceeded"

# One export item of the plan (see lambda/backfill_plan.py) -> Glue job run arguments.
EXPORT_ARGUMENTS = {
    "--RAW_BUCKET": "$.export.bucket",
    "--DOCTORS_KEY": "$.export.doctors_key",
    "--APPOINTMENTS_KEY": "$.export.appointments_key",
    "--DOCTORS_VERSION": "$.export.doctors_version",
    "--APPOINTMENTS_VERSION": "$.export.appointments_version",
    "--source": "$.export.source",
    "--export": "$.export.export",
    "--export_date": "$.export.export_date",
}
# A busy job is not an error of the export: wait, with full jitter so that parallel clinics do not
# retry in step (Glue queues runs beyond MaxConcurrentRuns, so this is the fallback, e.g. the
# account's concurrent-runs quota): 30 s x2 capped at 10 min, 12 attempts (about 1.5 h at most).
# Errors of the StartJobRun call itself that a later attempt can fix: as the upload workflow's.
BUSY_RETRY = Retry(GLUE_BUSY_ERRORS, interval=30, backoff_rate=2, max_attempts=12, max_delay=600)
TRANSIENT_RETRY = Retry(GLUE_TRANSIENT_ERRORS, interval=15, backoff_rate=2, max_attempts=4, max_delay=300)


def build_backfill_definition(
    scope: Construct, *, job_name: str, topic: sns.ITopic, planner: lambda_.IFunction, concurrency: int
) -> sfn.IChainable:
    """Plan -> Distributed Map over clinics (inline Map over each clinic's exports) -> alert on failures."""
    plan = tasks.LambdaInvoke(
        scope,
        STATE_PLAN,
        state_name=STATE_PLAN,
        comment="List raw/<source>/<export>/, date and sort each clinic's exports, write the plan to S3",
        lambda_function=planner,
        payload=sfn.TaskInput.from_object(
            {"input": sfn.JsonPath.object_at("$"), "execution": sfn.JsonPath.string_at("$$.Execution.Name")}
        ),
        payload_response_only=True,
        retry_on_service_exceptions=True,
        result_path="$.plan",
    )
    clinics = _clinics_map(scope, job_name, concurrency)
    notify = _notify_state(scope, topic)
    failed = sfn.Fail(
        scope, STATE_FAILED, state_name=STATE_FAILED, error="BackfillFailed",
        cause="The plan or at least one clinic failed; the alert topic has the details",
    )
    alert = notify.next(failed)
    plan.add_catch(alert, errors=["States.ALL"], result_path="$.failure")
    clinics.add_catch(alert, errors=["States.ALL"], result_path="$.failure")
    check = sfn.Pass(
        scope, STATE_CHECK, state_name=STATE_CHECK,
        parameters={"any_failed": sfn.JsonPath.array_contains(sfn.JsonPath.list_at("$.result.statuses"), "failed")},
        result_path="$.check",
    )
    collect = sfn.Pass(
        scope, STATE_COLLECT, state_name=STATE_COLLECT,
        # Only reached when one failed: the filter never comes back empty.
        parameters={"failed_clinics": sfn.JsonPath.string_at("$.result.clinics[?(@.status == 'failed')]")},
        result_path="$.failure",
    )
    any_failed = (
        sfn.Choice(scope, STATE_ANY_FAILED, state_name=STATE_ANY_FAILED)
        .when(sfn.Condition.boolean_equals("$.check.any_failed", True), collect.next(alert))
        .otherwise(sfn.Succeed(scope, STATE_SUCCEEDED, state_name=STATE_SUCCEEDED))
    )
    return plan.next(clinics).next(check).next(any_failed)


def _clinics_map(scope: Construct, job_name: str, concurrency: int) -> sfn.DistributedMap:
    clinics = sfn.DistributedMap(
        scope,
        STATE_CLINICS,
        state_name=STATE_CLINICS,
        comment="One child execution per clinic of the plan, at most backfillConcurrency at once",
        item_reader=sfn.S3JsonItemReader(
            bucket_name_path=sfn.JsonPath.string_at("$.plan.manifest_bucket"),
            key=sfn.JsonPath.string_at("$.plan.manifest_key"),
        ),
        item_selector={
            "source": sfn.JsonPath.string_at("$$.Map.Item.Value.source"),
            "exports": sfn.JsonPath.list_at("$$.Map.Item.Value.exports"),
        },
        max_concurrency=concurrency,
        map_execution_type=sfn.StateMachineType.STANDARD,  # .sync integrations need STANDARD
        label="Clinic",
        # Each clinic ends SUCCEEDED with its status (below); a child that fails anyway fails the map.
        result_selector={
            "clinics": sfn.JsonPath.object_at("$"),
            "statuses": sfn.JsonPath.list_at("$[*].status"),
        },
        result_path="$.result",
    )
    clinics.item_processor(_clinic_workflow(scope, job_name))
    return clinics


def _clinic_workflow(scope: Construct, job_name: str) -> sfn.IChainable:
    exports = sfn.Map(
        scope,
        STATE_EXPORTS,
        state_name=STATE_EXPORTS,
        comment="This clinic's exports one at a time, oldest first (merge refuses an older export)",
        items_path="$.exports",
        item_selector={
            "export": sfn.JsonPath.object_at("$$.Map.Item.Value"),
        },
        max_concurrency=1,
        result_path=sfn.JsonPath.DISCARD,
    )
    exports.item_processor(_run_job_state(scope, job_name))
    loaded = sfn.Pass(
        scope, STATE_CLINIC_LOADED, state_name=STATE_CLINIC_LOADED,
        parameters={
            "source": sfn.JsonPath.string_at("$.source"),
            "status": "loaded",
            "exports": sfn.JsonPath.array_length(sfn.JsonPath.list_at("$.exports")),
        },
    )
    failed = sfn.Pass(
        scope, STATE_CLINIC_FAILED, state_name=STATE_CLINIC_FAILED,
        comment="Later exports of this clinic stay unloaded; the other clinics go on",
        parameters={
            "source": sfn.JsonPath.string_at("$.source"),
            "status": "failed",
            "error": sfn.JsonPath.string_at("$.error.Error"),
            "cause": sfn.JsonPath.string_at("$.error.Cause"),
        },
    )
    exports.add_catch(failed, errors=["States.ALL"], result_path="$.error")
    return exports.next(loaded)


def _run_job_state(scope: Construct, job_name: str) -> sfn.CustomState:
    """One export, merge mode (the plan gives each export its capacity)."""
    arguments = {f"{arg}.$": path for arg, path in EXPORT_ARGUMENTS.items()}
    arguments["--LOAD_MODE"] = "merge"
    return glue_run_task(
        scope,
        STATE_RUN_JOB,
        job_name=job_name,
        comment="Run the Glue ETL job on one export (pinned versions, merge) and wait for it",
        max_capacity_path="$.export.max_capacity",
        arguments=arguments,
        result_path=None,
        retries=[BUSY_RETRY, TRANSIENT_RETRY],
    )


def _notify_state(scope: Construct, topic: sns.ITopic) -> tasks.SnsPublish:
    return notify_state(
        scope,
        STATE_NOTIFY,
        topic=topic,
        comment="Alert the on-call address: which backfill, which clinics failed and why",
        summary="HealthTech ETL backfill failed",
        details={"failure": sfn.JsonPath.object_at("$.failure")},
    )


class Backfill(GlueFlow):
    """The backfill state machine and its PlanBackfill function."""

    def build(self, *, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket, job_name: str, topic: sns.ITopic) -> None:
        self.planner = self._planner(raw_bucket, artifacts_bucket)
        self.state_machine = self._state_machine(job_name, topic, artifacts_bucket)

    def _planner(self, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket) -> lambda_.Function:
        config = self.config
        return self.python_function(
            "PlanFunction",
            role_description="healthtech-etl backfill-plan: list raw/ versions, write backfill plans",
            statements=planner_statements(Stack.of(self), raw_bucket, artifacts_bucket, self.key),
            function_name=f"{config.name_prefix}-backfill-plan",
            description="Lists, dates and sorts the exports under raw/ for a backfill and writes the plan to S3",
            handler="backfill_plan.handler",
            code=lambda_.Code.from_asset(str(LAMBDA_DIR), exclude=["__pycache__", "*.pyc", "tests"]),
            memory_size=256,
            timeout=Duration.minutes(5),
            environment={
                "RAW_BUCKET": raw_bucket.bucket_name,
                "RAW_PREFIX": RAW_PREFIX,
                "MANIFEST_BUCKET": artifacts_bucket.bucket_name,
                "MANIFEST_PREFIX": MANIFEST_PREFIX,
                "LARGE_INPUT_BYTES": str(config.large_input_mb * 1024 * 1024),
                "LOG_LEVEL": "INFO",
            },
        )

    def _state_machine(self, job_name: str, topic: sns.ITopic, artifacts_bucket: s3.IBucket) -> sfn.StateMachine:
        config, stack = self.config, Stack.of(self)
        state_machine = self.logged_state_machine(
            name=f"{config.name_prefix}-backfill",
            comment="healthtech-etl backfill: clinics in parallel, each clinic's exports in date order (merge)",
            definition=build_backfill_definition(
                self, job_name=job_name, topic=topic, planner=self.planner, concurrency=config.backfill_concurrency
            ),
            job_name=job_name,
        )
        # The ItemReader reads the plan; the topic and both buckets are KMS-encrypted.
        state_machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadBackfillPlans",
                actions=["s3:GetObject"],
                resources=[artifacts_bucket.arn_for_objects(f"{MANIFEST_PREFIX}*")],
            )
        )
        for service, actions in (("sns", ["kms:GenerateDataKey", "kms:Decrypt"]), ("s3", ["kms:Decrypt"])):
            state_machine.add_to_role_policy(key_via_service_statement(stack, self.key, service, actions))
        return state_machine


def planner_statements(
    stack: Stack, raw_bucket: s3.IBucket, artifacts_bucket: s3.IBucket, key: kms.IKey
) -> list[iam.PolicyStatement]:
    return [
        iam.PolicyStatement(
            sid="ListRawExports",
            actions=["s3:ListBucket", "s3:ListBucketVersions"],
            resources=[raw_bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{RAW_PREFIX}*"]}},
        ),
        iam.PolicyStatement(
            sid="WriteBackfillPlans",
            actions=["s3:PutObject"],
            resources=[artifacts_bucket.arn_for_objects(f"{MANIFEST_PREFIX}*")],
        ),
        key_via_service_statement(stack, key, "s3", ["kms:GenerateDataKey"], sid="UseDataKeyThroughS3"),
    ]
