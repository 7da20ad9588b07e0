"""Fixtures of the offline AWS tests: moto + the session's real PostgreSQL (``db_config``).

moto executes the state machine (with the fixes and conveniences of ``moto_patches.py``);
moto's Glue only records job runs, so the ``glue_runner`` fixture stands in for the Glue
service: each job run executes the real script in-process with the run's arguments (the
job's DefaultArguments merged with the task's Arguments, as Glue does) and ends SUCCEEDED or
FAILED by its exit code, with the script's last stderr line as ErrorMessage.
"""

import json
from types import SimpleNamespace
from typing import Any

import boto3
import moto_patches
import pytest
from awsenv import (
    ACCOUNT,
    AS_OF,
    JOB_NAME,
    MOTO_CONFIG,
    RAW_BUCKET,
    REGION,
    REPORT_BUCKET,
    REPORT_PREFIX,
    RESOLVER_NAME,
    SECRET_NAME,
    GlueScriptRunner,
    db_secret,
    resolve_inputs,
    state_machine_definition,
)
from moto import mock_aws
from moto.moto_api import state_manager

from healthtech_etl.db import DbConfig


@pytest.fixture(scope="session")
def moto_sfn() -> None:
    """moto's Step Functions interpreter with the fixes of moto_patches.py (needs moto 5.2.5;
    the Glue-job-only tests also run on the older moto of the Python 3.9 compat lane)."""
    moto_patches.apply()


@pytest.fixture(autouse=True)
def _restore_package_logging() -> Any:
    """The Glue script configures the package's JSON logging; leave it as found for other tests."""
    import logging

    package = logging.getLogger("healthtech_etl")
    saved = (list(package.handlers), package.level, package.propagate)
    yield
    for handler in list(package.handlers):
        if handler not in saved[0]:
            package.removeHandler(handler)
            handler.close()
    package.handlers[:] = saved[0]
    package.setLevel(saved[1])
    package.propagate = saved[2]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a fixed region: nothing can reach a real AWS account."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def aws(aws_env: None) -> Any:
    """moto for the whole test; clients of every service the chain touches."""
    with mock_aws(config=MOTO_CONFIG):
        yield SimpleNamespace(
            s3=boto3.client("s3"),
            sfn=boto3.client("stepfunctions"),
            glue=boto3.client("glue"),
            secrets=boto3.client("secretsmanager"),
            cloudwatch=boto3.client("cloudwatch"),
            sns=boto3.client("sns"),
            sqs=boto3.client("sqs"),
            iam=boto3.client("iam"),
            lambda_=boto3.client("lambda"),
        )


@pytest.fixture
def glue_runner(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Patch moto's Glue so that every job run runs the real script and ends by its exit code."""
    from moto.glue.models import FakeJob, FakeJobRun

    runner = GlueScriptRunner()
    # Job run states are set here only (moto's default would flip every run to SUCCEEDED).
    state_manager.set_transition("glue::job_run", {"progression": "manual", "times": 10**9})
    original_start = FakeJob.start_job_run
    original_as_dict = FakeJobRun.as_dict

    def start_job_run(self: Any, *args: Any, **kwargs: Any) -> str:
        if runner.before_start is not None:
            runner.before_start()
        run_id = original_start(self, *args, **kwargs)  # raises ConcurrentRunsExceededException
        job_run = next(run for run in self.job_runs if run.job_run_id == run_id)
        job_run.status = "RUNNING"
        code, message = runner.run(job_run.arguments or {})
        job_run.status = "SUCCEEDED" if code == 0 else "FAILED"
        if code != 0:
            job_run.error_message = message
        return run_id

    def as_dict(self: Any) -> dict:
        result = original_as_dict(self)
        if getattr(self, "error_message", None):
            result["ErrorMessage"] = self.error_message
        return result

    monkeypatch.setattr(FakeJob, "start_job_run", start_job_run)
    monkeypatch.setattr(FakeJobRun, "as_dict", as_dict)
    yield runner
    state_manager.unset_transition("glue::job_run")


@pytest.fixture
def resolver(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``lambda/resolve_inputs.py`` as the deployed function: moto's Lambda (no Docker) records the
    function, and each invocation runs the real handler in-process with its environment.
    Returns the function ARN; ``.calls`` / ``.results`` list what it was given and returned
    (``.resolved``: the results of the ``resolve`` action only)."""
    import io
    import zipfile

    from moto.awslambda_simple.models import LambdaSimpleBackend

    role = aws.iam.create_role(RoleName="resolve-inputs", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("resolve_inputs.py", "# runs in-process in the tests\n")
    arn = aws.lambda_.create_function(
        FunctionName=RESOLVER_NAME, Runtime="python3.14", Role=role, Handler="resolve_inputs.handler",
        Code={"ZipFile": package.getvalue()},
    )["FunctionArn"]
    # As the stack sets it (tests use the report bucket as the artifacts bucket).
    monkeypatch.setenv("CLAIM_BUCKET", REPORT_BUCKET)
    monkeypatch.setenv("CLAIM_PREFIX", "runs/claims/")
    monkeypatch.setenv("RESULT_PREFIX", f"{REPORT_PREFIX}/_executions/")
    for name in ("LARGE_INPUT_BYTES", "DOCTORS_FILENAME", "APPOINTMENTS_FILENAME", "METRIC_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    calls: list = []
    results: list = []
    resolved: list = []  # the results of the "resolve" action only

    def invoke(self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any) -> bytes:
        assert function_name.rsplit(":", 1)[-1] == RESOLVER_NAME or function_name.endswith(
            f":function:{RESOLVER_NAME}"), function_name
        event = json.loads(body) if body else {}
        calls.append(event)
        try:
            result = resolve_inputs.handler(event, None)
        except Exception as exc:  # what the Lambda runtime reports for an unhandled exception
            response_headers["x-amz-function-error"] = "Unhandled"
            results.append(exc)
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        results.append(result)
        if event.get("action", "resolve") == "resolve":
            resolved.append(result)
        return json.dumps(result).encode()

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    return SimpleNamespace(arn=arn, calls=calls, results=results, resolved=resolved)


@pytest.fixture
def stack(moto_sfn: None, aws: Any, db_config: DbConfig, glue_runner: Any, resolver: Any,
          monkeypatch: pytest.MonkeyPatch) -> Any:
    """What the CDK stack deploys, in moto: versioned raw bucket, report bucket, DB secret, Glue
    job (with its DefaultArguments), alert topic (an SQS subscriber reads the alerts back), the
    state machine; and the Lambda's environment."""
    aws.s3.create_bucket(Bucket=RAW_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    aws.s3.put_bucket_versioning(Bucket=RAW_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    aws.s3.create_bucket(Bucket=REPORT_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    secret_arn = aws.secrets.create_secret(Name=SECRET_NAME, SecretString=json.dumps(db_secret(db_config)))["ARN"]
    default_arguments = {
        "--DB_SECRET_ARN": secret_arn,
        "--REPORT_BUCKET": REPORT_BUCKET,
        "--REPORT_PREFIX": REPORT_PREFIX,
        # As deployed; DbConfig ignores TLS on the embedded server's unix socket.
        "--DB_SSLMODE": "require" if db_config.unix_socket_dir else db_config.sslmode,
        "--AS_OF": AS_OF,  # fixed so the sample's dates classify the same every day
    }
    aws.glue.create_job(
        Name=JOB_NAME,
        Role=f"arn:aws:iam::{ACCOUNT}:role/healthtech-etl-glue",
        Command={"Name": "pythonshell", "ScriptLocation": "s3://assets/glue_etl.py", "PythonVersion": "3.9"},
        DefaultArguments=default_arguments,
        ExecutionProperty={"MaxConcurrentRuns": 1},
        MaxCapacity=0.0625,
    )
    topic_arn = aws.sns.create_topic(Name="healthtech-etl-alerts")["TopicArn"]
    queue_url = aws.sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn,
                      Attributes={"RawMessageDelivery": "true"})
    state_machine_arn = aws.sfn.create_state_machine(
        name="healthtech-etl",
        definition=state_machine_definition(JOB_NAME, topic_arn, resolver.arn),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/healthtech-etl-states",
    )["stateMachineArn"]
    monkeypatch.setenv("STATE_MACHINE_ARN", state_machine_arn)
    monkeypatch.setenv("RAW_PREFIX", "raw/")
    monkeypatch.delenv("SETTLE_SECONDS", raising=False)
    # The partner Wait costs no time in the tests (moto_patches._patch_wait_sleep records it).
    monkeypatch.setenv("PARTNER_WAIT_SECONDS", "1")
    monkeypatch.delenv("DOCTORS_FILENAME", raising=False)
    monkeypatch.delenv("APPOINTMENTS_FILENAME", raising=False)

    def alerts() -> list:
        messages = aws.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [message["Body"] for message in messages.get("Messages", [])]

    return SimpleNamespace(
        aws=aws, db_config=db_config, glue=glue_runner, secret_arn=secret_arn,
        default_arguments=default_arguments, topic_arn=topic_arn, state_machine_arn=state_machine_arn,
        alerts=alerts, resolver=resolver,
    )


@pytest.fixture(scope="session")
def sample_workbooks(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The package's messy sample exports (doctors, appointments), made once per session."""
    from healthtech_etl.sample import write_sample_workbooks

    return write_sample_workbooks(tmp_path_factory.mktemp("samples"), rows=300, seed=11)
