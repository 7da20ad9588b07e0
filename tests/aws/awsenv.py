"""Constants and helpers of the offline AWS tests (fixtures are in conftest.py).

The chain under test is the deployed one: S3 event -> ``lambda/handler.py`` -> the state
machine of ``infra/asl/etl_state_machine.asl.json`` -> ``glue:startJobRun.sync`` -> the Glue
job ``glue_job/glue_etl.py`` -> PostgreSQL, S3 reports, CloudWatch metrics.
"""

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Callable, Optional
from urllib.parse import unquote_plus

import pytest
from moto.core import DEFAULT_ACCOUNT_ID

from healthtech_etl.db import DbConfig, connect

REPO = Path(__file__).resolve().parents[2]
EVENTS_DIR = REPO / "tests" / "events"
ASL_PATH = REPO / "infra" / "asl" / "etl_state_machine.asl.json"
REGION = "eu-west-1"
ACCOUNT = DEFAULT_ACCOUNT_ID
RAW_BUCKET = "healthtech-raw-123456789012-eu-west-1"  # the bucket named in tests/events/*.json
REPORT_BUCKET = "healthtech-reports-123456789012-eu-west-1"
REPORT_PREFIX = "reports"
JOB_NAME = "healthtech-etl"
SECRET_NAME = "healthtech/etl/db"
AS_OF = "2025-11-01"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
METRIC_NAMES = ("IdCompleteness", "ReferentialIntegrity", "DuplicateRate", "TypingSuccess", "AcceptanceRate",
                "RowsLoaded", "RowsRejected")


def load_module(name: str, path: Path) -> ModuleType:
    """Import a script that is not in a package (``lambda`` is a keyword, glue_job has no __init__)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


lambda_handler = load_module("healthtech_lambda_handler", REPO / "lambda" / "handler.py")
glue_etl = load_module("healthtech_glue_etl", REPO / "glue_job" / "glue_etl.py")
resolve_inputs = load_module("healthtech_resolve_inputs", REPO / "lambda" / "resolve_inputs.py")
RESOLVER_NAME = "healthtech-etl-resolve-inputs"


def load_event(name: str, versions: Optional[dict] = None) -> dict:
    """A sample event from tests/events/; ``versions`` maps a (decoded) key to the versionId
    moto gave that object, replacing the sample's made-up version ids."""
    event = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    for record in event.get("Records", []):
        obj = record.get("s3", {}).get("object", {}) if isinstance(record, dict) else {}
        key = obj.get("key")
        if versions and isinstance(key, str) and unquote_plus(key) in versions and "versionId" in obj:
            obj["versionId"] = versions[unquote_plus(key)]
    return event


def asl() -> dict:
    return json.loads(ASL_PATH.read_text(encoding="utf-8"))


def state_machine_definition(
    job_name: str, topic_arn: str, resolver_arn: str = "", report_bucket: str = REPORT_BUCKET
) -> str:
    """The deployed definition (exported from the CDK stack) with its placeholders filled in."""
    if not ASL_PATH.is_file():
        pytest.fail(f"{ASL_PATH.relative_to(REPO)} is missing: it is exported from the CDK stack (infra/)")
    text = ASL_PATH.read_text(encoding="utf-8")
    values = {"${GlueJobName}": job_name, "${AlertTopicArn}": topic_arn, "${Partition}": "aws",
              "${ResolveInputsFunctionArn}": resolver_arn, "${ReportBucketName}": report_bucket}
    for placeholder, value in values.items():
        if placeholder != "${Partition}":
            assert placeholder in text, f"{ASL_PATH.name} lacks the placeholder {placeholder}"
        text = text.replace(placeholder, value)
    assert "${" not in text, f"{ASL_PATH.name} has a placeholder the tests do not know"
    return text


def db_secret(config: DbConfig) -> dict:
    """The JSON document RDS keeps in Secrets Manager, for the test's database.

    The embedded server listens on a unix socket: its directory goes in ``host`` (a host
    starting with '/' is a socket directory for ``DbConfig.from_secret``). Trust auth ignores
    the password, but an RDS secret always has one."""
    return {
        "engine": "postgres",
        "host": config.unix_socket_dir or config.host,
        "port": config.port,
        "username": config.user,
        "password": config.password or "unused-by-trust-auth",
        "dbname": config.database,
    }


class GlueScriptRunner:
    """Stands in for the Glue service: a job run executes ``glue_etl.main`` with its arguments
    and ends by its exit code (see the ``glue_runner`` fixture)."""

    def __init__(self) -> None:
        self.calls: list = []
        self.before_start: Optional[Callable[[], None]] = None

    def run(self, arguments: dict) -> tuple:
        argv = ["glue_etl.py"]
        for name, value in arguments.items():
            argv += [name, value]
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = glue_etl.main(argv)
        lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
        message = lines[-1] if lines else ""
        self.calls.append(SimpleNamespace(argv=argv, arguments=dict(arguments), exit_code=code, stderr=message))
        return code, message


def put_object(s3: Any, bucket: str, key: str, path: Path) -> str:
    """Upload a file; return the version id S3 gave it ("null" on an unversioned bucket)."""
    response = s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return response.get("VersionId") or "null"


def db_count(config: DbConfig, table: str) -> int:
    connection = connect(config)
    try:
        exists = connection.run("SELECT to_regclass(:name) IS NOT NULL", name=f"healthtech.{table}")[0][0]
        if not exists:
            return 0
        return int(connection.run(f"SELECT count(*) FROM healthtech.{table}")[0][0])
    finally:
        connection.close()


def executions(aws: Any, state_machine_arn: str) -> list:
    return aws.sfn.list_executions(stateMachineArn=state_machine_arn)["executions"]


def history(aws: Any, execution_arn: str) -> list:
    return aws.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]


def report_keys(aws: Any, run_id: str) -> list:
    prefix = f"{REPORT_PREFIX}/{run_id}/"
    listing = aws.s3.list_objects_v2(Bucket=REPORT_BUCKET, Prefix=prefix)
    return sorted(item["Key"][len(prefix):] for item in listing.get("Contents", []))


def metric_values(aws: Any) -> dict:
    """``{metric name: [values]}`` published in the HealthTechETL namespace (dimensions must be none)."""
    import datetime

    found = {}
    for metric in aws.cloudwatch.list_metrics(Namespace="HealthTechETL")["Metrics"]:
        assert metric.get("Dimensions", []) == [], metric
        now = datetime.datetime.now(datetime.timezone.utc)
        stats = aws.cloudwatch.get_metric_statistics(
            Namespace="HealthTechETL", MetricName=metric["MetricName"], StartTime=now - datetime.timedelta(hours=1),
            EndTime=now + datetime.timedelta(minutes=5), Period=60, Statistics=["Maximum", "SampleCount"],
        )
        found[metric["MetricName"]] = stats["Datapoints"]
    return found
