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
    RDS_CA_BUNDLE_NAME,
    EtlConfig,
    find_wheel,
    retention,
)


class Storage(Construct):
    """Buckets plus the customer-managed KMS key shared by buckets, the SNS topic and log groups."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EtlConfig) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        self.key = kms.Key(
            self,
            "DataKey",
            description=f"{config.name_prefix}: raw data, reports, alerts and logs",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
            pending_window=Duration.days(7) if config.destroy_on_delete else Duration.days(30),
        )
        # CloudWatch Logs encrypts our log groups with this key (scoped to this account's log groups).
        self.key.add_to_resource_policy(
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

        common = {
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "minimum_tls_version": 1.2,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "removal_policy": config.removal_policy,
            "auto_delete_objects": config.destroy_on_delete,
        }

        # Server access logs cannot be delivered to a KMS-encrypted bucket: SSE-S3 here.
        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=Duration.days(max(config.log_retention_days, 90)),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            **common,
        )

        self.raw_bucket = s3.Bucket(
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
                    noncurrent_version_expiration=Duration.days(365 if config.is_prod else 90),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                    expired_object_delete_marker=True,
                )
            ],
            **common,
        )

        self.artifacts_bucket = s3.Bucket(
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
                # A pair claim only has to outlive S3's event redelivery and the settle window.
                s3.LifecycleRule(id="expire-pair-claims", prefix=CLAIM_PREFIX, expiration=Duration.days(30)),
            ],
            **common,
        )

        # The wheel and the Glue script, copied as they are (no Docker bundling) to glue/ in the
        # artifacts bucket. Each source is a directory asset filtered down to the one file.
        self.wheel_name = find_wheel().name
        if not GLUE_SCRIPT.is_file():
            raise FileNotFoundError(f"{GLUE_SCRIPT} is missing: it is deployed as the Glue job script")
        sources = [
            s3deploy.Source.asset(str(DIST_DIR), exclude=["*", f"!{self.wheel_name}"]),
            s3deploy.Source.asset(str(GLUE_SCRIPT.parent), exclude=["*", f"!{GLUE_SCRIPT.name}"]),
        ]
        # AWS's RDS CA bundle (`make deploy` downloads it first). Synth and tests run offline: without
        # the file the stack simply does not (re)deploy it, and scripts/cdk.sh refuses to deploy.
        self.ca_bundle_deployed = config.rds_ca_bundle.is_file()
        if self.ca_bundle_deployed:
            sources.append(
                s3deploy.Source.data(RDS_CA_BUNDLE_NAME, config.rds_ca_bundle.read_text(encoding="ascii"))
            )
        self.deployment = s3deploy.BucketDeployment(
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
    def ca_bundle_s3_key(self) -> str:
        return f"{GLUE_PREFIX}{RDS_CA_BUNDLE_NAME}"

    @property
    def script_s3_key(self) -> str:
        return f"{GLUE_PREFIX}{GLUE_SCRIPT.name}"
