"""S3 ``ObjectCreated`` -> one Step Functions execution of the ETL per uploaded workbook.

Thin on purpose (Python 3.14 Lambda runtime, boto3 only): it validates the event, works out
which export folder the upload belongs to and starts the state machine; the ETL itself runs in
Glue. One export = one folder ``raw/<source>/<export>/`` holding ``doctors.xlsx`` and
``appointments.xlsx`` (names matched case-insensitively). The execution looks at the folder at
once (``resolve_inputs.py``): both workbooks there -> it pins and claims that pair and loads it;
the partner not there yet -> it waits ``partner_wait_seconds`` for the partner's own upload to
load the pair, then checks once more and, still alone, publishes ``ExportsMissingPartner``
(alarmed). A workbook outside that layout or with another name (``appointments (1).xlsx``)
starts nothing and is counted in the ``MisnamedUploads`` metric (alarmed): never a silent success.

Environment:
    STATE_MACHINE_ARN       the ETL state machine (required)
    RAW_PREFIX              only keys under this prefix trigger a run (default ``raw/``)
    DOCTORS_FILENAME        workbook name of the doctors export (default ``doctors.xlsx``)
    APPOINTMENTS_FILENAME   workbook name of the appointments export (default ``appointments.xlsx``)
    PARTNER_WAIT_SECONDS    how long a lone workbook's execution waits for its partner (default 3600)
    METRIC_NAMESPACE        CloudWatch namespace of MisnamedUploads (default ``HealthTechETL``)
    LOG_LEVEL               DEBUG, INFO (default), WARNING, ERROR

S3 delivers events at least once, so the execution name is a hash of bucket + key + object
version (or the event's ``sequencer`` on an unversioned bucket): a redelivered event maps to
the same name and Step Functions refuses a second execution (``ExecutionAlreadyExists``), which
this handler counts as a duplicate, not a failure. Garbage is logged and reported in the return
value, never raised (an async invocation that raises is retried, which would not fix it);
only AWS errors that a retry can fix (throttling, outages) make the invocation fail.
"""

import hashlib
import json
import logging
import os
import re
import sys
import time
from typing import Any, Optional
from urllib.parse import unquote_plus

import boto3
from botocore.exceptions import BotoCoreError, ClientError

LOGGER_NAME = "healthtech_etl.trigger"
EXECUTION_NAME_MAX = 80  # Step Functions limit; allowed characters: [A-Za-z0-9-_]
NULL_VERSION = "null"  # what S3 calls the version of an object in an unversioned bucket
DEFAULT_PARTNER_WAIT_SECONDS = 3600
# raw/<source>/<export>/<workbook>: the clinic's name as the package accepts it (exports.validate_source).
SOURCE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
MISNAMED_METRIC = "MisnamedUploads"


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: CloudWatch Logs Insights can filter on every field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (CloudWatch in Lambda, captured in tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # type: ignore[no-untyped-def]
        pass


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(_JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False  # the Lambda runtime's root handler would log it a second time
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logger.setLevel(level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO")
    return logger


def _log(level: int, message: str, **fields: Any) -> None:
    _logger().log(level, message, extra={"fields": fields})


class _Settings:
    def __init__(self, environ: dict[str, str]) -> None:
        self.state_machine_arn = environ.get("STATE_MACHINE_ARN", "").strip()
        prefix = environ.get("RAW_PREFIX", "raw/").strip().lstrip("/")
        self.raw_prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.doctors_filename = environ.get("DOCTORS_FILENAME", "").strip() or "doctors.xlsx"
        self.appointments_filename = environ.get("APPOINTMENTS_FILENAME", "").strip() or "appointments.xlsx"
        wait = environ.get("PARTNER_WAIT_SECONDS", "").strip()
        # A bad value is a deployment mistake: fall back to the default rather than drop uploads.
        self.partner_wait_seconds = int(wait) if wait.isdigit() else DEFAULT_PARTNER_WAIT_SECONDS
        self.metric_namespace = environ.get("METRIC_NAMESPACE", "").strip() or "HealthTechETL"


def execution_name(bucket: str, key: str, version: str, sequencer: str) -> str:
    """Deterministic, <= 80 chars of ``[A-Za-z0-9-_]``: the same S3 object event -> the same name.

    A readable part (the workbook name) helps in the console; the hash makes it unique."""
    identity = f"{bucket}\n{key}\n{version if version != NULL_VERSION else ''}\n{sequencer}"
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:40]
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:30] or "workbook"
    return f"etl-{readable}-{digest}"[:EXECUTION_NAME_MAX]


def _ignore_reason(key: str, settings: _Settings) -> Optional[str]:
    if not key.startswith(settings.raw_prefix):
        return f"not under prefix {settings.raw_prefix!r}"
    basename = key.rsplit("/", 1)[-1]
    if not basename.lower().endswith(".xlsx"):
        return "not an .xlsx workbook"
    if basename.startswith("~$"):
        return "Excel lock file"
    return None


def export_folder(key: str, settings: _Settings) -> tuple[Optional[dict[str, str]], str]:
    """``({"source", "export", "folder"}, "")`` for ``<prefix><source>/<export>/<workbook>`` named
    like one of the two workbooks (case-insensitively); else ``(None, why it is not a run)``."""
    parts = key[len(settings.raw_prefix):].split("/")
    if len(parts) != 3 or not parts[1].strip():
        return None, f"not in an export folder {settings.raw_prefix}<source>/<export>/"
    source, export, name = parts
    if not SOURCE_PATTERN.match(source):
        return None, f"source folder {source!r} is not a clinic name (a-z, 0-9, '-', '_')"
    if name.lower() not in (settings.doctors_filename.lower(), settings.appointments_filename.lower()):
        return None, f"workbook name is neither {settings.doctors_filename} nor {settings.appointments_filename}"
    folder = f"{settings.raw_prefix}{source}/{export}/"
    return {"source": source, "export": export, "folder": folder}, ""


def _parse_record(record: Any) -> dict[str, str]:
    """The fields we need from one S3 notification record; ValueError says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("record is not an object")
    source = record.get("eventSource")
    if source != "aws:s3":
        raise ValueError(f"eventSource is {source!r}, not 'aws:s3'")
    event_name = str(record.get("eventName", ""))
    s3 = record.get("s3")
    if not isinstance(s3, dict) or not isinstance(s3.get("bucket"), dict) or not isinstance(s3.get("object"), dict):
        raise ValueError("record has no s3.bucket / s3.object")
    bucket = s3["bucket"].get("name")
    raw_key = s3["object"].get("key")
    if not isinstance(bucket, str) or not bucket or not isinstance(raw_key, str) or not raw_key:
        raise ValueError("record lacks s3.bucket.name or s3.object.key")
    version = s3["object"].get("versionId")
    sequencer = s3["object"].get("sequencer")
    return {
        "event_name": event_name,
        "bucket": bucket,
        # Keys arrive URL-encoded ("raw/my+file%28v2%29.xlsx" is "raw/my file(v2).xlsx").
        "key": unquote_plus(raw_key),
        "version": str(version) if version else NULL_VERSION,
        "sequencer": str(sequencer) if sequencer else "",
        "etag": str(s3["object"].get("eTag", "")),
        "event_time": str(record.get("eventTime", "")),
    }


def _execution_input(parsed: dict[str, str], settings: _Settings) -> dict[str, Any]:
    """The state machine's input (docs/aws.md "Execution input")."""
    return {
        "bucket": parsed["bucket"],
        "source": parsed["source"],
        "export": parsed["export"],
        "folder": parsed["folder"],
        "trigger_key": parsed["key"],
        "trigger_version": parsed["version"],
        "partner_wait_seconds": settings.partner_wait_seconds,
        "rerun_of": "",
    }


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Lambda entry point. Returns ``{"started": [...], "duplicates": [...], "ignored": [...],
    "misnamed": [...], "rejected": [...]}``; raises only for a missing configuration or a retryable
    AWS error."""
    settings = _Settings(dict(os.environ))
    result: dict[str, list[dict[str, Any]]] = {"started": [], "duplicates": [], "ignored": [], "misnamed": [],
                                               "rejected": []}
    request_id = getattr(context, "aws_request_id", None)
    if not settings.state_machine_arn:
        _log(logging.ERROR, "STATE_MACHINE_ARN is not set", request_id=request_id)
        raise RuntimeError("STATE_MACHINE_ARN is not set: the function is misconfigured")

    records = _records(event, result, request_id)
    client = None
    retryable: list[str] = []
    for index, record in enumerate(records):
        parsed = _wanted(index, record, settings, result, request_id)
        if parsed is None:
            continue
        if client is None:
            client = boto3.client("stepfunctions")
        problem = _start(client, index, parsed, settings, result, request_id)
        if problem:
            retryable.append(problem)
    problem = _count_misnamed(result, settings, request_id)
    if problem:
        retryable.append(problem)

    summary = _summary(result, request_id)
    if retryable:
        raise RuntimeError(f"could not start {len(retryable)} execution(s), will be retried: "
                           + "; ".join(retryable))
    return summary


def _records(event: Any, result: dict[str, list[dict[str, Any]]], request_id: Optional[str]) -> list[Any]:
    """The event's S3 records; none (with the reason in ``result``) for a test event or garbage."""
    if isinstance(event, dict) and event.get("Event") == "s3:TestEvent":
        # Sent once by S3 when the notification is configured; it carries no object.
        _log(logging.INFO, "ignored s3:TestEvent", bucket=event.get("Bucket"), request_id=request_id)
        result["ignored"].append({"reason": "s3:TestEvent", "bucket": event.get("Bucket")})
        return []
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        _log(logging.ERROR, "rejected event: no Records list", event_type=type(event).__name__,
             request_id=request_id)
        result["rejected"].append({"record": None, "reason": "event has no Records list"})
        return []
    return records


def _wanted(index: int, record: Any, settings: _Settings, result: dict[str, list[dict[str, Any]]],
            request_id: Optional[str]) -> Optional[dict[str, str]]:
    """The parsed record when it is an upload that starts a run; else None (rejected or ignored)."""
    try:
        parsed = _parse_record(record)
    except ValueError as exc:
        _log(logging.ERROR, "rejected record", record=index, reason=str(exc), request_id=request_id)
        result["rejected"].append({"record": index, "reason": str(exc)})
        return None
    if not parsed["event_name"].startswith("ObjectCreated:"):
        reason = f"event {parsed['event_name']!r} is not ObjectCreated"
    else:
        reason = _ignore_reason(parsed["key"], settings)
    if reason:
        _log(logging.INFO, "ignored object", bucket=parsed["bucket"], key=parsed["key"], reason=reason,
             request_id=request_id)
        result["ignored"].append({"key": parsed["key"], "reason": reason})
        return None
    folder, reason = export_folder(parsed["key"], settings)
    if folder is None:
        # A workbook the pipeline will never load: counted (MisnamedUploads, alarmed), not ignored silently.
        _log(logging.WARNING, "misnamed upload: not an export workbook", bucket=parsed["bucket"], key=parsed["key"],
             reason=reason, request_id=request_id)
        result["misnamed"].append({"key": parsed["key"], "reason": reason})
        return None
    return {**parsed, **folder}


def _count_misnamed(result: dict[str, list[dict[str, Any]]], settings: _Settings,
                    request_id: Optional[str]) -> Optional[str]:
    """Publish ``MisnamedUploads`` (one datapoint, the count); what failed when a retry may fix it."""
    if not result["misnamed"]:
        return None
    try:
        boto3.client("cloudwatch").put_metric_data(
            Namespace=settings.metric_namespace,
            MetricData=[{"MetricName": MISNAMED_METRIC, "Value": float(len(result["misnamed"])), "Unit": "Count"}],
        )
    except (BotoCoreError, ClientError) as exc:
        _log(logging.ERROR, "could not publish the MisnamedUploads metric", detail=str(exc)[:500],
             request_id=request_id)
        return f"{MISNAMED_METRIC}: {type(exc).__name__}"
    return None


def _start(client: Any, index: int, parsed: dict[str, str], settings: _Settings,
           result: dict[str, list[dict[str, Any]]], request_id: Optional[str]) -> Optional[str]:
    """Start the record's execution; returns what failed when a retry of the invocation may fix it."""
    sequencer = parsed["sequencer"] or f"{parsed['etag']}@{parsed['event_time']}"
    name = execution_name(parsed["bucket"], parsed["key"], parsed["version"], sequencer)
    fields = {"bucket": parsed["bucket"], "key": parsed["key"], "version": parsed["version"],
              "execution_name": name, "request_id": request_id}
    try:
        response = client.start_execution(
            stateMachineArn=settings.state_machine_arn,
            name=name,
            input=json.dumps(_execution_input(parsed, settings), sort_keys=True),
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ExecutionAlreadyExists":
            _log(logging.INFO, "duplicate event: execution already exists", **fields)
            result["duplicates"].append({"key": parsed["key"], "execution_name": name})
            return None
        _log(logging.ERROR, "could not start the ETL execution", error=code, detail=str(exc)[:500], **fields)
        if code in ("ValidationException", "InvalidName", "InvalidExecutionInput"):
            result["rejected"].append({"record": index, "reason": f"{code}: {str(exc)[:200]}"})
            return None
        # throttling, access, service errors: let Lambda retry (names keep it idempotent)
        return f"{parsed['key']}: {code or type(exc).__name__}"
    except BotoCoreError as exc:
        _log(logging.ERROR, "could not reach Step Functions", detail=str(exc)[:500], **fields)
        return f"{parsed['key']}: {type(exc).__name__}"
    _log(logging.INFO, "started ETL execution", execution_arn=response["executionArn"], **fields)
    result["started"].append(
        {"key": parsed["key"], "execution_name": name, "execution_arn": response["executionArn"]}
    )
    return None


def _summary(result: dict[str, list[dict[str, Any]]], request_id: Optional[str]) -> dict[str, Any]:
    _log(logging.INFO, "trigger summary", request_id=request_id,
         **{kind: len(items) for kind, items in result.items()})
    return dict(result)


# The name CDK/CloudFormation usually points at; both work.
lambda_handler = handler
