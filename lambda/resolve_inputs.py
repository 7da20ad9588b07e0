"""Step Functions tasks of one export folder: find and claim its pair, release a failed run's claim,
link a loaded run's report.

Thin on purpose (Python 3.14 Lambda runtime, boto3 only). One function, three actions (the
``action`` field of the task input):

``resolve`` (default) - called with the execution input (``input``: ``bucket``, ``source``,
``export``, ``folder``, optional ``rerun_of``), the execution id and ``final``. It

1. lists the folder ``raw/<source>/<export>/`` and finds ``doctors.xlsx`` and ``appointments.xlsx``
   in it, names matched case-insensitively (two spellings of one workbook: an error);
2. reads the latest version, size and date of both (``HeadObject``);
3. claims that exact pair once: ``PutObject`` of ``<CLAIM_PREFIX><pair id>.json`` with
   ``If-None-Match: *``, which S3 lets succeed for one writer only (the pair id hashes bucket, both
   keys and both versions). A re-run (``rerun_of`` = the failed execution) takes over a claim that
   failed execution still holds (a timed-out or aborted one could not release it);
4. picks the job's capacity (1 DPU above ``LARGE_INPUT_BYTES``, else 1/16 DPU) and the export date
   (folder name ``YYYY-MM-DD...`` or ``YYYY-MM...``, else the later upload's date).

It returns ``action``: ``run`` (claimed: load it), ``skip`` (another execution claimed this pair),
``wait`` (the partner is not there yet; first look) or ``missing`` (still alone at the final look:
the ``ExportsMissingPartner`` metric is published, alarmed), with everything the job needs
(docs/aws.md "Execution input"). Anything else raises, so the state machine's Catch alerts.

``release`` - deletes a failed run's claim (``claim_key``) if this execution holds it, so that the
same pair can run again (``make rerun``, or a new execution with the same input).

``report`` - reads what the job wrote to ``result_key`` after a load and returns its run id and the
links to its HTML report (s3:// and the S3 console); nothing there: empty links, not an error.

Environment:
    CLAIM_BUCKET          bucket of the claim markers and the run results (required)
    CLAIM_PREFIX          key prefix of the claim markers (default ``runs/claims/``)
    RESULT_PREFIX         key prefix of the results the job writes (default ``reports/_executions/``)
    LARGE_INPUT_BYTES     combined workbook size above which the job gets 1 DPU (default 16 MiB)
    DOCTORS_FILENAME / APPOINTMENTS_FILENAME   the two workbook names (defaults as above)
    METRIC_NAMESPACE      CloudWatch namespace (default ``HealthTechETL``)
"""

import datetime
import hashlib
import json
import os
import re
from typing import Any, Optional
from urllib.parse import quote

import boto3
from botocore.exceptions import ClientError

SMALL_DPU = 0.0625  # Glue Python shell: 1/16 DPU = 1 GB of memory
LARGE_DPU = 1.0  # 1 DPU = 16 GB
DEFAULT_LARGE_INPUT_BYTES = 16 * 1024 * 1024
NULL_VERSION = "null"
MISSING_METRIC = "ExportsMissingPartner"
_FOLDER_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?")


class ResolveError(RuntimeError):
    """A problem a retry will not fix (configuration, access): the execution fails and alerts."""


def _settings(environ: dict) -> dict:
    bucket = environ.get("CLAIM_BUCKET", "").strip()
    if not bucket:
        raise ResolveError("CLAIM_BUCKET is not set: the function is misconfigured")
    raw_limit = environ.get("LARGE_INPUT_BYTES", "").strip() or str(DEFAULT_LARGE_INPUT_BYTES)
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ResolveError(f"LARGE_INPUT_BYTES={raw_limit!r} is not a whole number of bytes") from None

    def prefix(name: str, default: str) -> str:
        value = environ.get(name, default).strip().lstrip("/") or default
        return value if value.endswith("/") else value + "/"

    return {
        "bucket": bucket,
        "prefix": prefix("CLAIM_PREFIX", "runs/claims/"),
        "results": prefix("RESULT_PREFIX", "reports/_executions/"),
        "limit": limit,
        "doctors": environ.get("DOCTORS_FILENAME", "").strip() or "doctors.xlsx",
        "appointments": environ.get("APPOINTMENTS_FILENAME", "").strip() or "appointments.xlsx",
        "namespace": environ.get("METRIC_NAMESPACE", "").strip() or "HealthTechETL",
    }


def find_workbooks(s3: Any, bucket: str, folder: str, names: dict) -> dict:
    """``{"doctors": key or None, "appointments": key or None}`` in ``folder`` (not below it),
    names matched case-insensitively; two spellings of one workbook raise ResolveError."""
    wanted = {name.lower(): entity for entity, name in names.items()}
    found: dict = {entity: None for entity in names}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder, Delimiter="/"):
        for item in page.get("Contents", []):
            entity = wanted.get(item["Key"][len(folder):].lower())
            if entity is None:
                continue
            if found[entity] is not None:
                raise ResolveError(f"two {names[entity]} workbooks in s3://{bucket}/{folder}: "
                                   f"{found[entity]!r} and {item['Key']!r} - delete one")
            found[entity] = item["Key"]
    return found


def _head(s3: Any, bucket: str, key: str) -> Optional[dict]:
    """Latest version of an object: ``{"version", "size", "etag", "modified"}``; None if absent."""
    try:
        response = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    modified = response.get("LastModified")
    return {
        "version": str(response.get("VersionId") or NULL_VERSION),
        "size": int(response.get("ContentLength", 0)),
        "etag": str(response.get("ETag", "")).strip('"'),
        "modified": modified.isoformat() if isinstance(modified, datetime.datetime) else str(modified or ""),
    }


def pair_id(bucket: str, doctors_key: str, doctors: dict, appointments_key: str, appointments: dict) -> str:
    """Same two object versions -> same id. An unversioned bucket ("null") falls back to ETag +
    Last-Modified, which change with every upload."""

    def identity(head: dict) -> str:
        if head["version"] != NULL_VERSION:
            return head["version"]
        return f"{head['etag']}@{head['modified']}"

    text = "\n".join([bucket, doctors_key, identity(doctors), appointments_key, identity(appointments)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def max_capacity(input_bytes: int, limit: int) -> float:
    """1 DPU when the workbooks together are larger than ``limit``, else 1/16 DPU (README "Memory")."""
    return LARGE_DPU if input_bytes > limit else SMALL_DPU


def export_date(export: str, heads: list) -> str:
    """YYYY-MM-DD: from the folder name (``2025-10-31...``, or ``2025-10...`` -> the 1st), else the
    date of the later upload (the rule of healthtech_etl.exports)."""
    match = _FOLDER_DATE.match(export)
    if match:
        try:
            return datetime.date(int(match.group(1)), int(match.group(2)), int(match.group(3) or 1)).isoformat()
        except ValueError:
            pass  # "2025-13": not a date, so not the export's date
    return max(head["modified"] for head in heads)[:10]


def _claim(s3: Any, settings: dict, key: str, record: dict, rerun_of: str) -> bool:
    """Create the pair's marker if nobody has (True); a re-run takes over its failed execution's."""
    body = json.dumps(record, sort_keys=True).encode("utf-8")
    try:
        s3.put_object(Bucket=settings["bucket"], Key=key, Body=body, ContentType="application/json",
                      IfNoneMatch="*")
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        # 412: the marker exists. 409 ConditionalRequestConflict: a concurrent writer is creating it.
        if code not in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            raise
        if not rerun_of or _holder(s3, settings["bucket"], key) != rerun_of:
            return False
        s3.put_object(Bucket=settings["bucket"], Key=key, Body=body, ContentType="application/json")
    return True


def _holder(s3: Any, bucket: str, key: str) -> str:
    """The execution that holds a claim ("" if there is none)."""
    try:
        return str(json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).get("execution", ""))
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey"):
            return ""
        raise


def resolve(s3: Any, settings: dict, event: dict) -> dict:
    """The ``resolve`` action (see the module docstring)."""
    given = event.get("input")
    if not isinstance(given, dict):
        raise ResolveError("the task input has no 'input' object (the execution input)")
    try:
        bucket, source, export, folder = (str(given[name]) for name in ("bucket", "source", "export", "folder"))
    except KeyError as exc:
        raise ResolveError(f"the execution input lacks {exc.args[0]!r}") from None
    execution = str(event.get("execution", ""))
    keys = find_workbooks(s3, bucket, folder, {"doctors": settings["doctors"],
                                               "appointments": settings["appointments"]})
    heads = {entity: (_head(s3, bucket, key) if key else None) for entity, key in keys.items()}
    result: dict = {
        "action": "skip", "reason": "", "pair_id": "", "claim_key": "", "bucket": bucket, "source": source,
        "export": export, "export_date": "", "result_key": f"{settings['results']}{execution.rsplit(':', 1)[-1]}.json",
        "max_capacity": SMALL_DPU, "input_bytes": sum(head["size"] for head in heads.values() if head),
    }
    for entity in ("doctors", "appointments"):
        result[f"{entity}_key"] = keys[entity] or f"{folder}{settings[entity]}"
        result[f"{entity}_version"] = heads[entity]["version"] if heads[entity] else ""
    missing = [result[f"{entity}_key"] for entity, head in heads.items() if head is None]
    if missing:
        return _partner_missing(result, settings, missing, bool(event.get("final")))
    doctors, appointments = heads["doctors"], heads["appointments"]
    assert doctors is not None and appointments is not None
    pair = pair_id(bucket, result["doctors_key"], doctors, result["appointments_key"], appointments)
    result.update(pair_id=pair, claim_key=f"{settings['prefix']}{pair}.json",
                  max_capacity=max_capacity(result["input_bytes"], settings["limit"]),
                  export_date=export_date(export, [doctors, appointments]))
    record = {
        "execution": execution, "bucket": bucket, "source": source, "export": export,
        "doctors": {"key": result["doctors_key"], "version": doctors["version"], "etag": doctors["etag"]},
        "appointments": {"key": result["appointments_key"], "version": appointments["version"],
                         "etag": appointments["etag"]},
        "claimed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    if _claim(s3, settings, result["claim_key"], record, str(given.get("rerun_of") or "")):
        result.update(action="run", reason="claimed this pair of versions")
    else:
        result.update(reason="another execution already claimed this pair of versions", claim_key="")
    return result


def _partner_missing(result: dict, settings: dict, missing: list, final: bool) -> dict:
    where = " and ".join(f"s3://{result['bucket']}/{key}" for key in missing)
    if not final:
        result.update(action="wait", reason=f"waiting for {where}")
        return result
    boto3.client("cloudwatch").put_metric_data(
        Namespace=settings["namespace"],
        MetricData=[{"MetricName": MISSING_METRIC, "Value": 1.0, "Unit": "Count"}],
    )
    result.update(action="missing", reason=f"export still missing its partner: {where}")
    return result


def release(s3: Any, settings: dict, event: dict) -> dict:
    """The ``release`` action: delete the claim if this execution holds it."""
    key, execution = str(event.get("claim_key") or ""), str(event.get("execution", ""))
    if not key.startswith(settings["prefix"]):
        return {"released": False, "claim_key": key, "reason": "no claim of this execution"}
    if _holder(s3, settings["bucket"], key) != execution:
        return {"released": False, "claim_key": key, "reason": "the claim is held by another execution"}
    s3.delete_object(Bucket=settings["bucket"], Key=key)
    return {"released": True, "claim_key": key, "reason": "the pair may run again"}


def report(s3: Any, settings: dict, event: dict) -> dict:
    """The ``report`` action: the loaded run's id and the links to its HTML report."""
    key = str(event.get("result_key") or "")
    out = {"run_id": "", "status": "", "html_report": "", "html_report_console": "", "reports": ""}
    try:
        written = json.loads(s3.get_object(Bucket=settings["bucket"], Key=key)["Body"].read())
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey"):
            return out
        raise
    out.update({name: str(written.get(name, "")) for name in ("run_id", "status", "html_report", "reports")})
    if out["html_report"].startswith("s3://"):
        bucket, _, object_key = out["html_report"][len("s3://"):].partition("/")
        region = os.environ.get("AWS_REGION", "")
        out["html_report_console"] = (f"https://console.aws.amazon.com/s3/object/{bucket}?region={region}"
                                      f"&prefix={quote(object_key, safe='/')}")
    return out


ACTIONS = {"resolve": resolve, "release": release, "report": report}


def handler(event: Any, context: Any = None) -> dict:
    """Run the task's action (see the module docstring)."""
    settings = _settings(dict(os.environ))
    if not isinstance(event, dict):
        raise ResolveError("the task input is not an object")
    action = ACTIONS.get(str(event.get("action") or "resolve"))
    if action is None:
        raise ResolveError(f"unknown action {event.get('action')!r}: one of {', '.join(ACTIONS)}")
    result = action(boto3.client("s3"), settings, event)
    # Keys, versions and sizes only: never workbook content.
    print(json.dumps({"message": f"{event.get('action') or 'resolve'} done",
                      "execution": event.get("execution", ""), **result}, sort_keys=True))
    return result
