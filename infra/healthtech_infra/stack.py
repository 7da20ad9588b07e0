"""HealthTechEtlStack: the whole system of one environment, assembled from one construct per concern."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from .backfill import Backfill
from .config import EtlConfig
from .database import Database
from .db_access import DbAccess
from .etl_job import EtlJob
from .glue_logs import GlueServiceLogGroups
from .monitoring import Monitoring
from .orchestration import Orchestration
from .storage import Storage
from .uploads import ClinicUploadPolicy


class HealthTechEtlStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: EtlConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        cdk.Tags.of(self).add("project", "healthtech-etl")
        cdk.Tags.of(self).add("environment", config.env)

        self.storage = Storage(self, "Storage", config=config)
        key = self.storage.key
        self.uploads = ClinicUploadPolicy(
            self, "ClinicUploads", config=config, raw_bucket=self.storage.raw_bucket, key=key
        )
        self.database = Database(self, "Database", config=config, key=key)
        self.monitoring = Monitoring(self, "Monitoring", config=config, key=key)
        self.etl = EtlJob(
            self,
            "Etl",
            config=config,
            database=self.database,
            raw_bucket=self.storage.raw_bucket,
            artifacts_bucket=self.storage.artifacts_bucket,
            key=key,
            script_key=self.storage.script_s3_key,
            extra_py_files_keys=self.storage.extra_py_files_s3_keys,
            ca_bundle_key=self.storage.ca_bundle_s3_key,
            db_secret=self.database.etl_secret,  # its own role's login, not the master user's
        )
        # The job must not start before its script and wheels are in S3.
        self.etl.job.node.add_dependency(self.storage.deployment)
        self.glue_service_logs = GlueServiceLogGroups(self, "GlueServiceLogs", config=config, key=key)
        # After GlueServiceLogs: the custom-resource provider they share takes its log group from there.
        self.db_access = DbAccess(self, "DbAccess", config=config, database=self.database, storage=self.storage,
                                  connection=self.etl.connection)
        self.orchestration = Orchestration(
            self,
            "Orchestration",
            config=config,
            raw_bucket=self.storage.raw_bucket,
            artifacts_bucket=self.storage.artifacts_bucket,
            job_name=self.etl.job.job_name,
            topic=self.monitoring.topic,
            key=key,
        )
        self.backfill = Backfill(
            self,
            "Backfill",
            config=config,
            raw_bucket=self.storage.raw_bucket,
            artifacts_bucket=self.storage.artifacts_bucket,
            job_name=self.etl.job.job_name,
            topic=self.monitoring.topic,
            key=key,
        )
        self.monitoring.watch(
            state_machine=self.orchestration.state_machine,
            function=self.orchestration.function,
            dead_letters=self.orchestration.dead_letters,
            job_name=self.etl.job.job_name,
            job_log_group_name=self.etl.log_group.log_group_name,
            database=self.database.instance,
        )
        self._outputs()

    def _outputs(self) -> None:
        out = {
            "RawBucketName": (
                self.storage.raw_bucket.bucket_name,
                "Upload raw/doctors.xlsx and raw/appointments.xlsx here",
            ),
            "ArtifactsBucketName": (
                self.storage.artifacts_bucket.bucket_name,
                "Glue code under glue/, reports under reports/",
            ),
            "StateMachineArn": (self.orchestration.state_machine.state_machine_arn, "ETL workflow"),
            "BackfillStateMachineArn": (
                self.backfill.state_machine.state_machine_arn,
                "Backfill: every export under raw/ (or {\"sources\": [...]}), clinics in parallel, exports in date order",
            ),
            "GlueJobName": (self.etl.job.job_name, "Glue Python shell job"),
            "AlertTopicArn": (self.monitoring.topic.topic_arn, "Alerts (failures, data quality)"),
            "DatabaseEndpoint": (
                self.database.instance.db_instance_endpoint_address,
                "RDS PostgreSQL (private)",
            ),
            "DatabaseSecretArn": (self.database.secret.secret_arn, "Master credentials: only the db-setup job reads them"),
            "DbSetupJobName": (self.db_access.setup_job.job_name, "Creates/updates the DB roles: make db-setup"),
            "OpsJobName": (self.db_access.ops_job.job_name, "runs/rejections/report as the reader: make ops CMD=..."),
            "DashboardName": (self.monitoring.dashboard.dashboard_name, "CloudWatch dashboard"),
            "ClinicUploadPolicyArn": (
                self.uploads.policy.managed_policy_arn,
                "Attach to a clinic's IAM user or role tagged source=<clinic>: it may write raw/<clinic>/ only",
            ),
        }
        for name, (value, description) in out.items():
            cdk.CfnOutput(self, name, value=value, description=description)
