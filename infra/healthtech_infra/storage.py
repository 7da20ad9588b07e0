"""Storage: the raw upload bucket, the artifacts/reports bucket, their access-log bucket and the stack key."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from .config import (
    CLAIM_PREFIX,
    DIST_DIR,
    GLUE_PREFIX,
    GLUE_SCRIPT,
    GLUE_STAGE_DIR,
    RDS_CA_BUNDLE_NAME,
    EtlConfig,
    find_library_wheels,
    find_wheel,
    retention,
)

DB_ACCESS_SCRIPT_NAME = "db_access.py"  # glue_job/db_access.py (infra/healthtech_infra/db_access.py)


class Storage(Construct):
    """Buckets plus the customer-managed KMS key shared by buckets, the SNS topic and log groups."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EtlConfig) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.key = self._data_key()
        common = {
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "minimum_tls_version": 1.2,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "removal_policy": config.removal_policy,
            "auto_delete_objects": config.destroy_on_delete,
        }
        self.access_logs_bucket = self._access_logs_bucket(common)
        self.raw_bucket = self._raw_bucket(common)
        self.artifacts_bucket = self._artifacts_bucket(common)
        self.deployment = self._glue_artifacts()

    def _data_key(self) -> kms.Key:
        config, stack = self.config, Stack.of(self)
        key = kms.Key(
            self,
            "DataKey",
            description=f"{config.name_prefix}: raw data, reports, alerts and logs",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
            pending_window=Duration.days(7) if config.destroy_on_delete else Duration.days(30),
        )
        # CloudWatch Logs encrypts our log groups with this key (scoped to this account's log groups).
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsOfThisAccount",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:*"
                        )
                    }
                },
            )
        )
        return key

    def _access_logs_bucket(self, common: dict) -> s3.Bucket:
        # Server access logs cannot be delivered to a KMS-encrypted bucket: SSE-S3 here.
        return s3.Bucket(
            self,
            "AccessLogsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(max(self.config.log_retention_days, 90)),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            **common,
        )

    def _raw_bucket(self, common: dict) -> s3.Bucket:
        return s3.Bucket(
            self,
            "RawBucket",
            versioned=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="raw-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="old-versions",
                    noncurrent_version_transitions=[
                        s3.NoncurrentVersionTransition(
                            storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                            transition_after=Duration.days(30),
                        )
                    ],
                    noncurrent_version_expiration=Duration.days(365 if self.config.is_prod else 90),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                    expired_object_delete_marker=True,
                )
            ],
            **common,
        )

    def _artifacts_bucket(self, common: dict) -> s3.Bucket:
        return s3.Bucket(
            self,
            "ArtifactsBucket",
            versioned=True,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix="artifacts-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="old-versions",
                    noncurrent_version_expiration=Duration.days(90),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
                # A pair claim only has to outlive S3's event redelivery and the partner wait.
                s3.LifecycleRule(id="expire-pair-claims", prefix=CLAIM_PREFIX, expiration=Duration.days(30)),
            ],
            **common,
        )

    def _glue_artifacts(self) -> s3deploy.BucketDeployment:
        """The project's wheel, the Glue script and the job's library wheels (python-calamine,
        packaging), copied as they are (no Docker bundling) to glue/ in the artifacts bucket. Each
        source is a directory asset filtered down to the one file."""
        config = self.config
        self.wheel_name = find_wheel().name
        self.library_names = [path.name for path in find_library_wheels()]
        if not GLUE_SCRIPT.is_file():
            raise FileNotFoundError(f"{GLUE_SCRIPT} is missing: it is deployed as the Glue job script")
        sources = [
            s3deploy.Source.asset(str(DIST_DIR), exclude=["*", f"!{self.wheel_name}"]),
            # The ETL job's script and the db-setup/ops jobs' (db_access.py), from glue_job/.
            s3deploy.Source.asset(
                str(GLUE_SCRIPT.parent), exclude=["*", f"!{GLUE_SCRIPT.name}", f"!{DB_ACCESS_SCRIPT_NAME}"]
            ),
        ]
        # AWS's RDS CA bundle (`make deploy` downloads it first). Synth and tests run offline: without
        # the file the stack simply does not (re)deploy it, and scripts/cdk.sh refuses to deploy.
        self.ca_bundle_deployed = config.rds_ca_bundle.is_file()
        if self.ca_bundle_deployed:
            sources.append(
                s3deploy.Source.data(RDS_CA_BUNDLE_NAME, config.rds_ca_bundle.read_text(encoding="ascii"))
            )
        sources += [
            s3deploy.Source.asset(str(GLUE_STAGE_DIR), exclude=["*", f"!{name}"]) for name in self.library_names
        ]
        return s3deploy.BucketDeployment(
            self,
            "GlueArtifacts",
            destination_bucket=self.artifacts_bucket,
            destination_key_prefix=GLUE_PREFIX,
            sources=sources,
            # Only ever add or replace these files: never delete reports or older artifacts.
            prune=False,
            retain_on_delete=False,
            memory_limit=256,
            log_group=logs.LogGroup(
                self,
                "GlueArtifactsDeploymentLogs",
                retention=retention(config.log_retention_days),
                encryption_key=self.key,
                removal_policy=config.removal_policy,
            ),
        )

    @property
    def wheel_s3_key(self) -> str:
        return f"{GLUE_PREFIX}{self.wheel_name}"

    @property
    def extra_py_files_s3_keys(self) -> list[str]:
        """The job's --extra-py-files, in install order: the library wheels, then the project's."""
        return [f"{GLUE_PREFIX}{name}" for name in self.library_names] + [self.wheel_s3_key]

    @property
    def ca_bundle_s3_key(self) -> str:
        return f"{GLUE_PREFIX}{RDS_CA_BUNDLE_NAME}"

    @property
    def script_s3_key(self) -> str:
        return f"{GLUE_PREFIX}{GLUE_SCRIPT.name}"
