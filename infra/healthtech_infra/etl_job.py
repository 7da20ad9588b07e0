"""The Glue Python shell job (3.9, analytics library set) that runs the healthtech_etl wheel in the VPC."""

from __future__ import annotations

import jsii
from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from .config import RAW_PREFIX, REPORT_PREFIX, EtlConfig
from .database import Database
from .sfn_parts import (
    encrypted_log_group,
    key_via_service_statement,
    put_metric_statement,
    read_raw_statement,
)


class S3ObjectCode(glue.Code):
    """A script or library already in S3, without the broad `bucket.grantRead` of `Code.fromBucket`.

    The job role gets `s3:GetObject` on exactly these objects instead (see `EtlJob`).
    """

    def __init__(self, bucket: s3.IBucket, key: str) -> None:
        super().__init__()
        self.bucket = bucket
        self.key = key

    @jsii.member(jsii_name="bind")
    def bind(self, scope: Construct, grantable: iam.IGrantable) -> glue.CodeConfig:  # noqa: ARG002
        return glue.CodeConfig(
            s3_location=s3.Location(bucket_name=self.bucket.bucket_name, object_key=self.key)
        )


class EtlJob(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EtlConfig,
        database: Database,
        raw_bucket: s3.IBucket,
        artifacts_bucket: s3.IBucket,
        key: kms.IKey,
        script_key: str,
        extra_py_files_keys: list[str],
        ca_bundle_key: str,
        db_secret: secretsmanager.ISecret | None,
    ) -> None:
        super().__init__(scope, construct_id)
        assert db_secret is not None, "the RDS instance must have a generated secret"
        self.config = config
        self.connection = glue.Connection(
            self,
            "VpcConnection",
            type=glue.ConnectionType.NETWORK,
            description="healthtech-etl: Glue job ENIs in the isolated subnets",
            security_groups=[database.glue_sg],
            # The endpoints' AZ (database.endpoint_subnets starts with this subnet).
            network=glue.ConnectionNetwork.vpc(database.vpc, subnets=[database.job_subnet]),
        )
        # Retained in prod: unique to this stack, so that a redeploy does not collide with it.
        self.log_group = encrypted_log_group(self, "JobLogs", f"/aws-glue/{config.name_prefix}", config=config, key=key)
        self.role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("glue.amazonaws.com"),
            description="healthtech-etl Glue job: read raw/, write reports/, read the DB secret, put metrics",
        )
        policy = iam.Policy(self, "JobPolicy", roles=[self.role])
        code_keys = [script_key, *extra_py_files_keys, ca_bundle_key]
        policy.add_statements(
            *data_statements(Stack.of(self), raw_bucket, artifacts_bucket, key, db_secret, code_keys),
            *runtime_statements(Stack.of(self), self.connection.connection_name),
        )
        self.job = self._job(artifacts_bucket, script_key, extra_py_files_keys, ca_bundle_key, db_secret)
        # The role's policy must exist before the job can run with it.
        self.job.node.add_dependency(policy)

    def _job(
        self,
        artifacts_bucket: s3.IBucket,
        script_key: str,
        extra_py_files_keys: list[str],
        ca_bundle_key: str,
        db_secret: secretsmanager.ISecret,
    ) -> glue.PythonShellJob:
        config = self.config
        return glue.PythonShellJob(
            self,
            "Job",
            job_name=config.name_prefix,
            description="healthtech-etl: clean the clinic workbooks, report quality, load PostgreSQL",
            role=self.role,
            script=S3ObjectCode(artifacts_bucket, script_key),
            # Glue's launcher pip-installs each, in this order, into one --target directory.
            extra_python_files=[S3ObjectCode(artifacts_bucket, key) for key in extra_py_files_keys],
            python_version=glue.PythonVersion.THREE_NINE,
            library_set=glue.LibrarySet.ANALYTICS,
            max_capacity=glue.MaxCapacity.DPU_1_16TH,
            connections=[self.connection],
            # Runs beyond max_concurrent_runs wait (WAITING) instead of failing: Glue job run queuing.
            max_concurrent_runs=config.glue_max_concurrent_runs,
            job_run_queuing_enabled=True,
            max_retries=0,
            timeout=Duration.minutes(config.glue_timeout_minutes),
            continuous_logging=glue.ContinuousLoggingProps(enabled=True, log_group=self.log_group),
            default_arguments={
                "--DB_SECRET_ARN": db_secret.secret_arn,
                "--REPORT_BUCKET": artifacts_bucket.bucket_name,
                "--REPORT_PREFIX": REPORT_PREFIX,
                # Authenticate RDS: AWS's CA bundle, deployed beside the script by Storage.
                "--DB_SSLMODE": "verify-full",
                "--DB_SSLROOTCERT": f"s3://{artifacts_bucket.bucket_name}/{ca_bundle_key}",
                "--LOAD_MODE": config.load_mode,  # context loadMode; a run may pass its own
                # CDK already sets `library-set` (the spelling in the Glue docs) from library_set;
                # the dashed form is the project's documented contract and is harmless to Glue.
                "--library-set": "analytics",
            },
        )


def data_statements(
    stack: Stack,
    raw_bucket: s3.IBucket,
    artifacts_bucket: s3.IBucket,
    key: kms.IKey,
    db_secret: secretsmanager.ISecret,
    code_keys: list[str],
) -> list[iam.PolicyStatement]:
    """What the job reads and writes: workbooks, reports, its own code, the DB secret."""
    return [
        # Inputs: the uploaded workbooks (any version) under raw/.
        read_raw_statement("ReadRawUploads", raw_bucket),
        iam.PolicyStatement(
            sid="ListRawPrefix",
            actions=["s3:ListBucket"],
            resources=[raw_bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{RAW_PREFIX}*"]}},
        ),
        # Outputs: quality reports under reports/.
        iam.PolicyStatement(
            sid="WriteReports",
            actions=["s3:PutObject"],
            resources=[artifacts_bucket.arn_for_objects(f"{REPORT_PREFIX}/*")],
        ),
        # The job script, its wheels and the RDS CA bundle, nothing else of the artifacts bucket.
        iam.PolicyStatement(
            sid="ReadJobCode",
            actions=["s3:GetObject"],
            resources=[artifacts_bucket.arn_for_objects(code_key) for code_key in code_keys],
        ),
        # SSE-KMS on both buckets: only through S3.
        key_via_service_statement(stack, key, "s3", ["kms:Decrypt", "kms:GenerateDataKey"], sid="UseDataKeyThroughS3"),
        iam.PolicyStatement(
            sid="ReadDatabaseSecret",
            actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            resources=[db_secret.secret_arn],
        ),
    ]


def runtime_statements(stack: Stack, connection_name: str) -> list[iam.PolicyStatement]:
    """What running in Glue takes: metrics, Glue's service log groups, the VPC connection's ENIs."""
    return [
        put_metric_statement("PutEtlMetrics"),
        # Logs: CDK grants the job's own (continuous logging) group; these are the
        # service-named groups Glue Python shell always writes stdout/stderr to.
        iam.PolicyStatement(
            sid="WriteGlueServiceLogs",
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[
                stack.format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name="/aws-glue/python-jobs/*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                ),
            ],
        ),
        # The NETWORK connection: Glue creates and removes the job's ENIs with this role.
        iam.PolicyStatement(
            sid="GlueVpcNetworkInterfaces",
            actions=[
                "ec2:CreateNetworkInterface",
                "ec2:DeleteNetworkInterface",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeVpcEndpoints",
                "ec2:DescribeRouteTables",
                "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeVpcAttribute",
            ],
            resources=["*"],
        ),
        iam.PolicyStatement(
            sid="TagGlueNetworkInterfaces",
            actions=["ec2:CreateTags", "ec2:DeleteTags"],
            resources=[stack.format_arn(service="ec2", resource="network-interface", resource_name="*")],
            conditions={"ForAllValues:StringEquals": {"aws:TagKeys": ["aws-glue-service-resource"]}},
        ),
        iam.PolicyStatement(
            sid="ReadOwnConnection",
            actions=["glue:GetConnection"],
            resources=[
                stack.format_arn(service="glue", resource="catalog"),
                stack.format_arn(service="glue", resource="connection", resource_name=connection_name),
            ],
        ),
    ]
