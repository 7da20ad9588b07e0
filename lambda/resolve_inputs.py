"""Step Functions task ``ResolveInputs``: after the settle wait, pin the pair of workbooks to load.

Thin on purpose (Python 3.14 Lambda runtime, boto3 only). Called by the state machine with the
execution input (``bucket``, ``doctors_key``, ``appointments_key``, ...) and the execution id. It

1. reads the latest version, size and ETag of both workbooks (``HeadObject``);
2. claims that exact pair once: ``PutObject`` of ``<CLAIM_PREFIX><pair id>.json`` in the claim
   bucket with ``If-None-Match: *``, which S3 lets succeed for one writer only. The pair id is
   a hash of bucket, both keys and both versions (ETag + Last-Modified on an unversioned bucket);
3. picks the job's capacity: 1 DPU when both workbooks together are larger than
   ``LARGE_INPUT_BYTES``, else 1/16 DPU (see README "Memory").

It returns ``{"action": "run" | "skip", "reason", "pair_id", "doctors_version",
"appointments_version", "input_bytes", "max_capacity"}``. ``skip`` means another execution
already claimed (and runs) this very pair - the other upload of the pair arrived within the
settle window - or one of the two workbooks does not exist yet (its upload will start its own
execution). Anything else raises, so the state machine's Catch alerts.

Environment:
    CLAIM_BUCKET        bucket of the claim markers (required)
    CLAIM_PREFIX        key prefix of the claim markers (default ``runs/claims/``)
    LARGE_INPUT_BYTES   combined workbook size above which the job gets 1 DPU (default 16 MiB)
"""

import datetime
import hashlib
import json
import os
from typing import Any, Optional

import boto3
from botocore.exceptions import ClientError

SMALL_DPU = 0.0625  # Glue Python shell: 1/16 DPU = 1 GB of memory
LARGE_DPU = 1.0  # 1 DPU = 16 GB
DEFAULT_LARGE_INPUT_BYTES = 16 * 1024 * 1024
NULL_VERSION = "null"


class ResolveError(RuntimeError):
    """A problem a retry will not fix (configuration, access): the execution fails and alerts."""


def _settings(environ: dict) -> dict:
    bucket = environ.get("CLAIM_BUCKET", "").strip()
    if not bucket:
        raise ResolveError("CLAIM_BUCKET is not set: the function is misconfigured")
    prefix = environ.get("CLAIM_PREFIX", "runs/claims/").strip().lstrip("/")
    raw_limit = environ.get("LARGE_INPUT_BYTES", "").strip() or str(DEFAULT_LARGE_INPUT_BYTES)
    try:
        limit = int(raw_limit)
    except ValueError:
        raise ResolveError(f"LARGE_INPUT_BYTES={raw_limit!r} is not a whole number of bytes") from None
    return {"bucket": bucket, "prefix": prefix if prefix.endswith("/") else prefix + "/", "limit": limit}


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
    """1 DPU when the workbooks together are larger than ``limit``, else 1/16 DPU. The run's peak
    memory - the python-calamine read of both workbooks, then their pandas frames - grows with their
    size, and 1/16 DPU has 1 GB (README "Memory" has the measured peak)."""
    return LARGE_DPU if input_bytes > limit else SMALL_DPU


def _claim(s3: Any, settings: dict, pair: str, record: dict) -> bool:
    """Create the pair's marker if nobody has: True for the one caller that created it."""
    try:
        s3.put_object(
            Bucket=settings["bucket"],
            Key=f"{settings['prefix']}{pair}.json",
            Body=json.dumps(record, sort_keys=True).encode("utf-8"),
            ContentType="application/json",
            IfNoneMatch="*",
        )
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        # 412: the marker exists. 409 ConditionalRequestConflict: a concurrent writer is creating it.
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
            return False
        raise
    return True


def handler(event: Any, context: Any = None) -> dict:
    """Resolve and claim the pair for one execution (see the module docstring)."""
    settings = _settings(dict(os.environ))
    if not isinstance(event, dict):
        raise ResolveError("the task input is not an object")
    try:
        bucket = str(event["bucket"])
        doctors_key = str(event["doctors_key"])
        appointments_key = str(event["appointments_key"])
    except KeyError as exc:
        raise ResolveError(f"the task input lacks {exc.args[0]!r}") from None
    execution = str(event.get("execution", ""))
    s3 = boto3.client("s3")

    doctors = _head(s3, bucket, doctors_key)
    appointments = _head(s3, bucket, appointments_key)
    result: dict = {
        "action": "skip",
        "reason": "",
        "pair_id": "",
        "doctors_version": doctors["version"] if doctors else "",
        "appointments_version": appointments["version"] if appointments else "",
        "input_bytes": (doctors["size"] if doctors else 0) + (appointments["size"] if appointments else 0),
        "max_capacity": SMALL_DPU,
    }
    missing = [key for key, head in ((doctors_key, doctors), (appointments_key, appointments)) if head is None]
    if missing:
        result["reason"] = "waiting for " + " and ".join(f"s3://{bucket}/{key}" for key in missing)
        return _logged(result, execution)

    assert doctors is not None and appointments is not None
    pair = pair_id(bucket, doctors_key, doctors, appointments_key, appointments)
    result["pair_id"] = pair
    result["max_capacity"] = max_capacity(result["input_bytes"], settings["limit"])
    record = {
        "execution": execution,
        "bucket": bucket,
        "doctors": {"key": doctors_key, "version": doctors["version"], "etag": doctors["etag"]},
        "appointments": {"key": appointments_key, "version": appointments["version"], "etag": appointments["etag"]},
        "claimed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    if _claim(s3, settings, pair, record):
        result["action"] = "run"
        result["reason"] = "claimed this pair of versions"
    else:
        result["reason"] = "another execution already claimed this pair of versions"
    return _logged(result, execution)


def _logged(result: dict, execution: str) -> dict:
    # Keys, versions and sizes only: never workbook content.
    print(json.dumps({"message": "resolved inputs", "execution": execution, **result}, sort_keys=True))
    return result
