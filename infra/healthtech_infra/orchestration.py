"""Orchestration: S3 upload -> Lambda -> Step Functions -> Glue job (.sync), failures -> SNS alert."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .config import LAMBDA_DIR, RAW_PREFIX, EtlConfig, retention

STATE_RUN_JOB = "RunGlueEtlJob"
STATE_NOTIFY = "NotifyFailure"
STATE_FAILED = "EtlFailed"
STATE_SUCCEEDED = "EtlSucceeded"

# State machine input (sent by the Lambda) -> Glue job run argument.
RUN_ARGUMENTS = {
    "--RAW_BUCKET": "$.bucket",
    "--DOCTORS_KEY": "$.doctors_key",
    "--APPOINTMENTS_KEY": "$.appointments_key",
    "--TRIGGER_KEY": "$.trigger_key",
    "--TRIGGER_VERSION": "$.trigger_version",
}


def build_definition(scope: Construct, *, job_name: str, topic: sns.ITopic) -> sfn.IChainable:
    """The ETL workflow, kept to plain Task/Retry/Catch/Fail/Succeed with JSONPath (runs on moto too)."""
    run_job = tasks.GlueStartJobRun(
        scope,
        STATE_RUN_JOB,
        state_name=STATE_RUN_JOB,
        comment="Run the Glue ETL job and wait for it to finish",
        glue_job_name=job_name,
        integration_pattern=sfn.IntegrationPattern.RUN_JOB,
        arguments=sfn.TaskInput.from_object(
            {arg: sfn.JsonPath.string_at(path) for arg, path in RUN_ARGUMENTS.items()}
        ),
        result_path="$.glue",
    )
    # Another upload while a run is in progress (max concurrent runs = 1): wait and try again.
    run_job.add_retry(
        errors=["Glue.ConcurrentRunsExceededException"],
        interval=Duration.seconds(60),
        backoff_rate=2,
        max_attempts=5,
    )
    notify = tasks.SnsPublish(
        scope,
        STATE_NOTIFY,
        state_name=STATE_NOTIFY,
        comment="Alert the on-call address with the run input and the error",
        topic=topic,
        subject="HealthTech ETL run failed",
        message=sfn.TaskInput.from_object(
            {
                "summary": "HealthTech ETL run failed",
                "execution": sfn.JsonPath.string_at("$$.Execution.Id"),
                "input": {
                    "bucket": sfn.JsonPath.string_at("$.bucket"),
                    "doctors_key": sfn.JsonPath.string_at("$.doctors_key"),
                    "appointments_key": sfn.JsonPath.string_at("$.appointments_key"),
                    "trigger_key": sfn.JsonPath.string_at("$.trigger_key"),
                    "trigger_version": sfn.JsonPath.string_at("$.trigger_version"),
                },
                "error": sfn.JsonPath.string_at("$.error.Error"),
                "cause": sfn.JsonPath.string_at("$.error.Cause"),
            }
        ),
        result_path="$.notification",
    )
    failed = sfn.Fail(
        scope,
        STATE_FAILED,
        state_name=STATE_FAILED,
        error="EtlJobFailed",
        cause="The Glue ETL job run failed; the alert topic has the details",
    )
    succeeded = sfn.Succeed(scope, STATE_SUCCEEDED, state_name=STATE_SUCCEEDED)
    run_job.add_catch(notify.next(failed), errors=["States.ALL"], result_path="$.error")
    return run_job.next(succeeded)


class Orchestration(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EtlConfig,
        raw_bucket: s3.IBucket,
        job_name: str,
        topic: sns.ITopic,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)

        self.state_machine_log_group = logs.LogGroup(
            self,
            "StateMachineLogs",
            log_group_name=f"/aws/vendedlogs/states/{config.name_prefix}",
            retention=retention(config.log_retention_days),
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=config.name_prefix,
            comment="healthtech-etl: run the Glue ETL job for an uploaded workbook, alert on failure",
            definition_body=sfn.DefinitionBody.from_chainable(
                build_definition(self, job_name=job_name, topic=topic)
            ),
            timeout=Duration.minutes(config.state_machine_timeout_minutes),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.state_machine_log_group,
                level=sfn.LogLevel.ALL,
                include_execution_data=True,
            ),
        )

        self.function_log_group = logs.LogGroup(
            self,
            "TriggerFunctionLogs",
            log_group_name=f"/aws/lambda/{config.name_prefix}-trigger",
            retention=retention(config.log_retention_days),
            encryption_key=key,
            removal_policy=config.removal_policy,
        )
        # An explicit role (no AWSLambdaBasicExecutionRole): its log group, and starting this one machine.
        function_role = iam.Role(
            self,
            "TriggerFunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="healthtech-etl trigger: write its logs, start the ETL state machine",
        )
        self.function = lambda_.Function(
            self,
            "TriggerFunction",
            function_name=f"{config.name_prefix}-trigger",
            description="Starts the ETL state machine when a workbook lands under raw/",
            runtime=lambda_.Runtime.PYTHON_3_14,
            handler="handler.handler",
            code=lambda_.Code.from_asset(str(LAMBDA_DIR), exclude=["__pycache__", "*.pyc", "tests"]),
            role=function_role,
            log_group=self.function_log_group,
            memory_size=256,
            timeout=Duration.seconds(30),
            environment={
                "STATE_MACHINE_ARN": self.state_machine.state_machine_arn,
                "RAW_PREFIX": RAW_PREFIX,
                "DOCTORS_FILENAME": "doctors.xlsx",
                "APPOINTMENTS_FILENAME": "appointments.xlsx",
                "LOG_LEVEL": "INFO",
            },
        )
        self.function_log_group.grant_write(function_role)
        self.state_machine.grant_start_execution(self.function)

        raw_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.function),
            s3.NotificationKeyFilter(prefix=RAW_PREFIX, suffix=".xlsx"),
        )
