"""Monitoring: the encrypted alert topic, alarms (workflow, Lambda, data quality) and a dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from .config import GLUE_SERVICE_LOG_GROUPS, METRIC_NAMESPACE, EtlConfig


@dataclass(frozen=True)
class QualityThreshold:
    metric: str
    comparison: cw.ComparisonOperator
    threshold: float
    severity: str
    statistic: str
    text: str
    name_suffix: str = ""  # "-warning" / "-critical": every metric has both levels


_BELOW, _ABOVE = cw.ComparisonOperator.LESS_THAN_THRESHOLD, cw.ComparisonOperator.GREATER_THAN_THRESHOLD
# The default quality contract's levels (healthtech_etl.contract.DEFAULT_METRICS, quality.toml; a test
# keeps them equal): (metric, alert below?, warning, critical, what it measures).
_CONTRACT_LEVELS = (
    ("IdCompleteness", True, 100, 95, "rows with both ids valid"),
    ("ReferentialIntegrity", True, 95, 90, "appointments pointing at known doctors"),
    ("DuplicateRate", False, 5, 20, "duplicate rows"),
    ("TypingSuccess", True, 100, 95, "booking dates that parsed"),
    ("AcceptanceRate", True, 90, 75, "rows accepted"),
)
# One datapoint per run, no dimensions: a warning and a critical alarm per metric, like the report's.
QUALITY_THRESHOLDS = tuple(
    QualityThreshold(metric, _BELOW if below else _ABOVE, level, severity.upper(), "Minimum" if below else "Maximum",
                     f"{text} {'<' if below else '>'} {level:g} %", f"-{severity}")
    for metric, below, warning, critical, text in _CONTRACT_LEVELS
    for severity, level in (("warning", warning), ("critical", critical))
)
COUNT_METRICS = ("RowsLoaded", "RowsRejected")


def etl_metric(name: str, statistic: str = "Maximum", period_minutes: int = 5) -> cw.Metric:
    """A job metric: namespace HealthTechETL, no dimensions."""
    return cw.Metric(
        namespace=METRIC_NAMESPACE,
        metric_name=name,
        statistic=statistic,
        period=Duration.minutes(period_minutes),
    )


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: EtlConfig, key: kms.Key) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.topic = sns.Topic(
            self,
            "AlertTopic",
            topic_name=f"{config.name_prefix}-alerts",
            display_name="HealthTech ETL alerts",
            master_key=key,
            enforce_ssl=True,
        )
        stack = Stack.of(self)
        # enforce_ssl's policy replaces SNS's default one: allow this stack's alarms (by name
        # prefix) to publish, and nothing else of CloudWatch.
        self.alarm_arn_pattern = (
            f"arn:{stack.partition}:cloudwatch:{stack.region}:{stack.account}:alarm:{config.name_prefix}-*"
        )
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisStacksAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {"aws:SourceArn": self.alarm_arn_pattern},
                },
            )
        )
        # CloudWatch alarms publish to the KMS-encrypted topic: they need the key.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublish",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )
        if config.alert_email:
            self.topic.add_subscription(subs.EmailSubscription(config.alert_email))
        self.alarms: list[cw.Alarm] = []

    def _alarm(self, construct_id: str, **props) -> cw.Alarm:
        alarm = cw.Alarm(self, construct_id, **props)
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        self.alarms.append(alarm)
        return alarm

    def watch(
        self,
        *,
        state_machine: sfn.StateMachine,
        function: lambda_.IFunction,
        dead_letters: sqs.IQueue,
        job_name: str,
        job_log_group_name: str,
        database: rds.DatabaseInstance,
    ) -> None:
        self._workflow_alarms(state_machine, function, dead_letters)
        self._quality_alarms()
        self.dashboard = cw.Dashboard(
            self,
            "Dashboard",
            dashboard_name=self.config.name_prefix,
            default_interval=Duration.days(7),
        )
        for row in (
            [self._overview_text()],
            [cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms, width=24, height=3)],
            run_widgets(state_machine, function),
            quality_widgets(),
            self._database_and_log_widgets(job_name, job_log_group_name, database),
            [*glue_output_widgets(), dead_letter_widget(dead_letters)],
        ):
            self.dashboard.add_widgets(*row)

    def _workflow_alarms(
        self, state_machine: sfn.StateMachine, function: lambda_.IFunction, dead_letters: sqs.IQueue
    ) -> None:
        """CRITICAL alarms: a failed or timed-out execution, a failed trigger, a dead-lettered event, an export
        missing its partner, a misnamed upload."""
        prefix = self.config.name_prefix
        five_min = Duration.minutes(5)
        for construct_id, name, description, metric in (
            ("StateMachineFailed", "workflow-failed", "an ETL state machine execution failed",
             state_machine.metric_failed(period=five_min, statistic="Sum")),
            ("StateMachineTimedOut", "workflow-timed-out", "an ETL state machine execution timed out",
             state_machine.metric_timed_out(period=five_min, statistic="Sum")),
            ("TriggerErrors", "trigger-errors", "the upload trigger Lambda failed (the ETL did not start)",
             function.metric_errors(period=five_min, statistic="Sum")),
            ("TriggerDeadLetters", "trigger-dead-letters",
             "an upload event could not start the ETL after retries (see the queue)",
             dead_letters.metric_approximate_number_of_messages_visible(period=five_min, statistic="Maximum")),
            ("ExportsMissingPartner", "exports-missing-partner",
             "an export folder still lacks one of its two workbooks after partnerWaitMinutes (not loaded)",
             etl_metric("ExportsMissingPartner", "Sum")),
            ("MisnamedUploads", "misnamed-uploads",
             "a workbook landed outside raw/<source>/<export>/ or under another name (not loaded)",
             etl_metric("MisnamedUploads", "Sum")),
        ):
            self._alarm(
                construct_id,
                alarm_name=f"{prefix}-{name}",
                alarm_description=f"CRITICAL: {description}",
                metric=metric,
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )

    def _quality_alarms(self) -> None:
        for q in QUALITY_THRESHOLDS:
            self._alarm(
                f"Quality{q.metric}{q.name_suffix.replace('-', '').title()}",
                alarm_name=f"{self.config.name_prefix}-dq-{q.metric}{q.name_suffix}",
                alarm_description=f"{q.severity}: data quality - {q.text} (threshold {q.threshold:g})",
                metric=etl_metric(q.metric, q.statistic),
                threshold=q.threshold,
                evaluation_periods=1,
                comparison_operator=q.comparison,
                # One datapoint per ETL run: no data between runs is normal.
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )

    def _overview_text(self) -> cw.TextWidget:
        prefix = self.config.name_prefix
        return cw.TextWidget(
            markdown=(
                f"# HealthTech ETL ({self.config.env})\n"
                f"Upload `raw/*.xlsx` -> Lambda -> Step Functions `{prefix}` -> Glue job `{prefix}` -> PostgreSQL. "
                "Data-quality thresholds (warning / critical): IdCompleteness 100 / 95 %, ReferentialIntegrity "
                "95 / 90 %, DuplicateRate 5 / 20 %, TypingSuccess 100 / 95 %, AcceptanceRate 90 / 75 %."
            ),
            width=24,
            height=2,
        )

    def _database_and_log_widgets(
        self, job_name: str, job_log_group_name: str, database: rds.DatabaseInstance
    ) -> list[cw.IWidget]:
        return [
            cw.GraphWidget(
                title="PostgreSQL",
                left=[database.metric_cpu_utilization(), database.metric_database_connections()],
                right=[database.metric_free_storage_space()],
                width=12,
            ),
            cw.LogQueryWidget(
                title=f"Glue job {job_name}: recent errors",
                log_group_names=[job_log_group_name, GLUE_SERVICE_LOG_GROUPS[1]],
                query_lines=[
                    "fields @timestamp, @message",
                    "filter @message like /ERROR/",
                    "sort @timestamp desc",
                    "limit 20",
                ],
                width=12,
            ),
        ]


def run_widgets(state_machine: sfn.StateMachine, function: lambda_.IFunction) -> list[cw.IWidget]:
    return [
        cw.GraphWidget(
            title="Workflow executions",
            left=[
                state_machine.metric_started(statistic="Sum"),
                state_machine.metric_succeeded(statistic="Sum"),
                state_machine.metric_failed(statistic="Sum"),
                state_machine.metric_timed_out(statistic="Sum"),
            ],
            width=12,
        ),
        cw.GraphWidget(
            title="Trigger Lambda",
            left=[function.metric_invocations(statistic="Sum"), function.metric_errors(statistic="Sum")],
            right=[function.metric_duration(statistic="Maximum")],
            width=12,
        ),
    ]


def quality_widgets() -> list[cw.IWidget]:
    return [
        cw.GraphWidget(
            title="Data quality (%)",
            left=[etl_metric(q.metric, q.statistic) for q in QUALITY_THRESHOLDS if q.name_suffix == "-warning"],
            left_annotations=[
                cw.HorizontalAnnotation(value=95, label="ReferentialIntegrity >= 95"),
                cw.HorizontalAnnotation(value=5, label="DuplicateRate <= 5"),
                cw.HorizontalAnnotation(value=90, label="AcceptanceRate >= 90"),
            ],
            width=12,
        ),
        cw.GraphWidget(
            title="Rows per run",
            left=[etl_metric(name, "Sum") for name in COUNT_METRICS],
            width=12,
        ),
    ]


def glue_output_widgets() -> list[cw.IWidget]:
    return [
        cw.LogQueryWidget(
            # Python shell's stdout/stderr (all jobs of the account share these groups).
            title="Glue Python shell output and errors (/aws-glue/python-jobs/*)",
            log_group_names=list(GLUE_SERVICE_LOG_GROUPS),
            query_lines=[
                "fields @timestamp, @logStream, @message",
                "sort @timestamp desc",
                "limit 50",
            ],
            width=24,
        )
    ]


def dead_letter_widget(dead_letters: sqs.IQueue) -> cw.IWidget:
    return cw.GraphWidget(
        title="Trigger dead letters",
        left=[dead_letters.metric_approximate_number_of_messages_visible(statistic="Maximum")],
        width=12,
    )
