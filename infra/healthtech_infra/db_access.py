"""Database access beside the ETL: the db-setup job that creates the login roles, and the ops job
through which operators run `runs`, `rejections` and `report` against the private RDS database.

Both are Glue Python shell jobs like the ETL job: the same wheels (the package brings pg8000's
caller code and the SQL of `healthtech_etl.db_roles`), the same VPC connection and security group
(the only one the database admits), one script (glue_job/db_access.py, `--TASK setup|ops`). Only
the db-setup job may read the master secret; the ETL job reads the ETL role's secret, the ops job
the reader's. A custom resource starts the db-setup job when the stack is created and whenever the
setup code changes (`--SETUP_VERSION`, a hash of it); `make db-setup` starts it by hand.
"""

from __future__ import annotations

import hashlib

from aws_cdk import Duration, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import custom_resources as cr
from constructs import Construct

from .config import GLUE_PREFIX, REPO_ROOT, EtlConfig, retention, stack_unique
from .database import Database
from .etl_job import S3ObjectCode, runtime_statements
from .storage import DB_ACCESS_SCRIPT_NAME, Storage

DB_ACCESS_SCRIPT = REPO_ROOT / "glue_job" / DB_ACCESS_SCRIPT_NAME
ROLES_MODULE = REPO_ROOT / "src" / "healthtech_etl" / "db_roles.py"
OPS_PREFIX = "reports/ops"


def setup_version() -> str:
    """Changes when the setup's code does: the custom resource then runs the setup again."""
    digest = hashlib.sha256()
    for path in (ROLES_MODULE, ROLES_MODULE.with_name("glue_args.py"), DB_ACCESS_SCRIPT):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class DbAccess(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EtlConfig,
        database: Database,
        storage: Storage,
        connection: glue.IConnection,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config, self.database, self.connection = config, database, connection
        artifacts_bucket = self.artifacts_bucket = storage.artifacts_bucket
        self.key = storage.key
        self.script_key = f"{GLUE_PREFIX}{DB_ACCESS_SCRIPT.name}"
        self.extra_py_files_keys, self.ca_bundle_key = storage.extra_py_files_s3_keys, storage.ca_bundle_s3_key
        assert database.secret is not None
        self.setup_job, self.setup_policy = self._job(
            "Setup", "db-setup", "setup", secrets={"MASTER": database.secret, "ETL": database.etl_secret,
                                                   "READER": database.reader_secret},
            description="healthtech-etl: create or update the ETL and reader database roles (idempotent)",
            timeout_minutes=15, concurrent=1,
        )
        self.ops_job, self.ops_policy = self._job(
            "Ops", "ops", "ops", secrets={"READER": database.reader_secret},
            description="healthtech-etl: runs / rejections / report as the read-only role, output to S3",
            timeout_minutes=15, concurrent=3,
            statements=[iam.PolicyStatement(
                sid="WriteOpsOutput", actions=["s3:PutObject"],
                resources=[artifacts_bucket.arn_for_objects(f"{OPS_PREFIX}/*")],
            )],
            arguments={"--REPORT_BUCKET": artifacts_bucket.bucket_name, "--OPS_COMMAND": "runs"},
        )
        for job in (self.setup_job, self.ops_job):
            job.node.add_dependency(storage.deployment)  # the script and wheels are in S3 first
        self.run_setup = self._run_setup_on_deploy()

    def _job(
        self, construct_id: str, suffix: str, task: str, *, secrets: dict[str, secretsmanager.ISecret],
        description: str, timeout_minutes: int, concurrent: int,
        statements: list[iam.PolicyStatement] | None = None, arguments: dict[str, str] | None = None,
    ) -> tuple[glue.PythonShellJob, iam.Policy]:
        config, stack = self.config, Stack.of(self)
        log_group = logs.LogGroup(
            self, f"{construct_id}Logs",
            log_group_name=stack_unique(f"/aws-glue/{config.name_prefix}-{suffix}"),
            retention=retention(config.log_retention_days), encryption_key=self.key,
            removal_policy=config.removal_policy,
        )
        role = iam.Role(self, f"{construct_id}Role", assumed_by=iam.ServicePrincipal("glue.amazonaws.com"),
                        description=f"healthtech-etl {suffix} Glue job: {', '.join(secrets)} database secret(s)")
        code_keys = [self.script_key, *self.extra_py_files_keys, self.ca_bundle_key]
        policy = iam.Policy(self, f"{construct_id}Policy", roles=[role])
        policy.add_statements(
            iam.PolicyStatement(sid="ReadJobCode", actions=["s3:GetObject"],
                                resources=[self.artifacts_bucket.arn_for_objects(k) for k in code_keys]),
            iam.PolicyStatement(sid="UseDataKeyThroughS3", actions=["kms:Decrypt", "kms:GenerateDataKey"],
                                resources=[self.key.key_arn],
                                conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}}),
            iam.PolicyStatement(sid="ReadDatabaseSecrets",
                                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                                resources=[secret.secret_arn for secret in secrets.values()]),
            *(statements or []),
            *[s for s in runtime_statements(stack, self.connection.connection_name) if s.sid != "PutEtlMetrics"],
        )
        job = glue.PythonShellJob(
            self, f"{construct_id}Job", job_name=f"{config.name_prefix}-{suffix}", description=description,
            role=role, script=S3ObjectCode(self.artifacts_bucket, self.script_key),
            extra_python_files=[S3ObjectCode(self.artifacts_bucket, k) for k in self.extra_py_files_keys],
            python_version=glue.PythonVersion.THREE_NINE, library_set=glue.LibrarySet.ANALYTICS,
            max_capacity=glue.MaxCapacity.DPU_1_16TH, connections=[self.connection],
            max_concurrent_runs=concurrent, max_retries=0, timeout=Duration.minutes(timeout_minutes),
            continuous_logging=glue.ContinuousLoggingProps(enabled=True, log_group=log_group),
            default_arguments={
                "--TASK": task,
                **{f"--{name}_SECRET_ARN": secret.secret_arn for name, secret in secrets.items()},
                "--DB_SSLMODE": "verify-full",
                "--DB_SSLROOTCERT": f"s3://{self.artifacts_bucket.bucket_name}/{self.ca_bundle_key}",
                **(arguments or {}),
            },
        )
        job.node.add_dependency(policy)
        return job, policy

    def _run_setup_on_deploy(self) -> cr.AwsCustomResource:
        """glue:StartJobRun of the db-setup job on create, and on update when the setup code changed.
        It starts the run and does not wait for it (docs/aws.md): the outcome is in the job's run history;
        `make db-setup` runs it again and waits. Until a setup succeeded, ETL runs fail to log in
        (exit 4), and a failed ETL run alerts as always."""
        start = cr.AwsSdkCall(
            service="Glue",
            action="startJobRun",
            parameters={"JobName": self.setup_job.job_name, "Arguments": {"--SETUP_VERSION": setup_version()}},
            physical_resource_id=cr.PhysicalResourceId.of(f"{self.config.name_prefix}-db-setup"),
        )
        run = cr.AwsCustomResource(
            self,
            "RunSetupOnDeploy",
            on_create=start,
            on_update=start,
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=["glue:StartJobRun"], resources=[self.setup_job.job_arn])]
            ),
            install_latest_aws_sdk=False,
        )
        # The roles need the instance (available), the secrets (attached) and the job (with its policy).
        run.node.add_dependency(self.setup_job, self.database.instance, *self.database.role_secrets)
        return run
