"""Step Functions task ``PlanBackfill`` of the backfill state machine: which exports to load, in
which order.

Thin on purpose (Python 3.14 Lambda runtime, boto3 only). It lists the latest version of every
object under ``RAW_PREFIX`` of ``RAW_BUCKET``, keeps the export folders
``raw/<source>/<export>/`` that hold both ``doctors.xlsx`` and ``appointments.xlsx`` (names
matched case-insensitively), dates each export (the rule of ``healthtech_etl.exports``: the
folder name's leading ``YYYY-MM-DD`` or ``YYYY-MM`` - first day of the month -, else the date
the later of the two workbooks was uploaded, UTC), sorts each clinic's exports by that date
(then by folder name), and writes the plan as a JSON array, one item per clinic, to
``s3://MANIFEST_BUCKET/MANIFEST_PREFIX<execution>/manifest.json``. The state machine's
Distributed Map reads that array (ItemReader): clinics in parallel, each clinic's exports in
this order.

Each export item pins the two workbook versions it saw and picks the job's capacity like
ResolveInputs does (1 DPU above ``LARGE_INPUT_BYTES`` combined, else 1/16).

Input: ``{"input": <the execution input>, "execution": <execution name>}``, where the execution
input may name the clinics: ``{"sources": ["clinic-a", ...]}`` (absent or empty: every clinic).
Output (kept small, it travels in the execution's state): ``{"manifest_bucket",
"manifest_key", "clinics", "exports", "skipped": [...first 50...], "skipped_count"}``. A folder
that is not a loadable export (partner missing, two files with the same name in other case, a
source name that is not valid) is skipped with a reason code and logged. A requested clinic
without any loadable export, or a malformed request, raises: the execution alerts and fails.
"""

import datetime
import json
import logging
import os
import re
from collections.abc import Iterable
from typing import Any, Optional

import boto3

SOURCE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # = healthtech_etl.exports.SOURCE_PATTERN
_FOLDER_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?")  # = healthtech_etl.exports._FOLDER_DATE
WORKBOOKS = {"doctors.xlsx": "doctors", "appointments.xlsx": "appointments"}
SMALL_DPU = 0.0625
LARGE_DPU = 1.0
DEFAULT_LARGE_INPUT_BYTES = 16 * 1024 * 1024
SHOWN_SKIPS = 50

logger = logging.getLogger("healthtech_etl.backfill_plan")
logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))


class PlanError(RuntimeError):
    """The request or the configuration cannot be planned: the execution fails and alerts."""


def export_date_from_folder(name: str) -> Optional[datetime.date]:
    """Mirror of ``healthtech_etl.exports.export_date_from_folder`` (the Lambda does not bundle
    the package; tests/unit checks both agree)."""
    found = _FOLDER_DATE.match(name or "")
    if found is None:
        return None
    year, month, day = found.group(1), found.group(2), found.group(3) or "01"
    try:
        return datetime.date(int(year), int(month), int(day))
    except ValueError:
        return None


def _folders(objects: Iterable[dict], prefix: str) -> tuple:
    """``{(source, export): {"doctors": obj, "appointments": obj}}`` and the skips found on the way."""
    folders: dict = {}
    duplicates: set = set()
    for obj in objects:
        parts = obj["Key"][len(prefix):].split("/")
        if len(parts) != 3 or parts[2].lower() not in WORKBOOKS:
            continue  # not a workbook of an export folder (other files are not runs)
        entity = WORKBOOKS[parts[2].lower()]
        folder = folders.setdefault((parts[0], parts[1]), {})
        if entity in folder:
            duplicates.add((parts[0], parts[1]))
        folder[entity] = obj
    return folders, duplicates


def _export_item(bucket: str, source: str, export: str, pair: dict, limit: int) -> dict:
    doctors, appointments = pair["doctors"], pair["appointments"]
    uploaded = max(_utc(doctors["LastModified"]), _utc(appointments["LastModified"])).date()
    dated = export_date_from_folder(export)
    size = int(doctors.get("Size", 0)) + int(appointments.get("Size", 0))
    return {
        "bucket": bucket,
        "source": source,
        "export": export,
        "export_date": (dated or uploaded).isoformat(),
        "date_from": "folder" if dated else "upload_time",
        "doctors_key": doctors["Key"],
        "appointments_key": appointments["Key"],
        "doctors_version": str(doctors.get("VersionId") or "null"),
        "appointments_version": str(appointments.get("VersionId") or "null"),
        "input_bytes": size,
        "max_capacity": LARGE_DPU if size > limit else SMALL_DPU,
    }


def _utc(value: Any) -> datetime.datetime:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


def plan(objects: Iterable[dict], bucket: str, prefix: str, sources: Optional[list] = None,
         limit: int = DEFAULT_LARGE_INPUT_BYTES) -> tuple:
    """``(clinics, skipped)``: one item per clinic, ``{"source", "exports": [...]}`` sorted by source,
    its exports sorted by (export_date, export); ``skipped``: ``{"folder", "reason"}``."""
    folders, duplicates = _folders(objects, prefix)
    wanted = set(sources or [])
    clinics: dict = {}
    skipped = []
    for (source, export), pair in sorted(folders.items()):
        folder = f"{prefix}{source}/{export}/"
        if wanted and source not in wanted:
            continue
        reason = None
        if not SOURCE_PATTERN.match(source):
            reason = "invalid_source"
        elif (source, export) in duplicates:
            reason = "ambiguous_workbook_names"
        elif len(pair) != 2:
            reason = "missing_" + ("appointments" if "doctors" in pair else "doctors")
        if reason:
            skipped.append({"folder": folder, "reason": reason})
            continue
        clinics.setdefault(source, []).append(_export_item(bucket, source, export, pair, limit))
    missing = sorted(wanted - set(clinics))
    if missing:
        raise PlanError(f"no loadable export under {prefix}<source>/<export>/ for: {', '.join(missing)}")
    items = []
    for source in sorted(clinics):
        exports = sorted(clinics[source], key=lambda item: (item["export_date"], item["export"]))
        items.append({"source": source, "exports": exports})
    return items, skipped


def _requested_sources(execution_input: Any) -> list:
    if not isinstance(execution_input, dict):
        raise PlanError("the execution input must be a JSON object, e.g. {\"sources\": [\"clinic-a\"]} or {}")
    sources = execution_input.get("sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) and SOURCE_PATTERN.match(s) for s in sources):
        raise PlanError("\"sources\" must be a list of clinic names (a-z, 0-9, '_' or '-', at most 63 characters)")
    return sources


def _latest_objects(s3: Any, bucket: str, prefix: str) -> list:
    """The latest version of every object under ``prefix`` (deleted objects excluded)."""
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        found += [v for v in page.get("Versions", []) if v.get("IsLatest")]
    return found


def handler(event: dict, context: Any) -> dict:
    bucket = os.environ.get("RAW_BUCKET", "").strip()
    manifest_bucket = os.environ.get("MANIFEST_BUCKET", "").strip()
    if not bucket or not manifest_bucket:
        raise PlanError("RAW_BUCKET and MANIFEST_BUCKET must be set: the function is misconfigured")
    prefix = os.environ.get("RAW_PREFIX", "raw/")
    limit = int(os.environ.get("LARGE_INPUT_BYTES", "") or DEFAULT_LARGE_INPUT_BYTES)
    execution = str(event.get("execution") or "manual")
    sources = _requested_sources(event.get("input", {}))
    s3 = boto3.client("s3")
    clinics, skipped = plan(_latest_objects(s3, bucket, prefix), bucket, prefix, sources, limit)
    key = f"{os.environ.get('MANIFEST_PREFIX', 'backfills/')}{execution}/manifest.json"
    s3.put_object(Bucket=manifest_bucket, Key=key, Body=json.dumps(clinics).encode("utf-8"),
                  ContentType="application/json")
    exports = sum(len(clinic["exports"]) for clinic in clinics)
    for skip in skipped:
        logger.warning(json.dumps({"event": "backfill_folder_skipped", **skip}))
    logger.info(json.dumps({"event": "backfill_planned", "execution": execution, "clinics": len(clinics),
                            "exports": exports, "skipped": len(skipped), "manifest": f"s3://{manifest_bucket}/{key}"}))
    return {"manifest_bucket": manifest_bucket, "manifest_key": key, "clinics": len(clinics), "exports": exports,
            "skipped": skipped[:SHOWN_SKIPS], "skipped_count": len(skipped)}
