"""AWS Glue Python shell entry point: S3 workbooks -> healthtech_etl -> PostgreSQL (RDS).

Thin on purpose: parse the job arguments, fetch inputs and credentials, call the package,
publish the report and the metrics, exit. Runs on Glue Python shell 3.9 with the ``analytics``
library set (the package wheel comes in through ``--extra-py-files``) and locally with the
same arguments (argparse stands in for ``awsglue.utils.getResolvedOptions``), e.g.::

    python glue_job/glue_etl.py --RAW_BUCKET b --DOCTORS_KEY raw/doctors.xlsx \\
        --APPOINTMENTS_KEY raw/appointments.xlsx --DB_SECRET_ARN arn:... \\
        --REPORT_BUCKET r --REPORT_PREFIX reports [--AS_OF 2025-11-01] \\
        [--DB_SSLMODE verify-full] [--DB_SSLROOTCERT s3://artifacts/glue/rds-global-bundle.pem] \\
        [--LOAD_MODE merge] [--source clinic-a --export 2025-10 --export_date 2025-10-01] \
        [--RESULT_KEY reports/_executions/<execution name>.json]

Reports go to ``s3://<REPORT_BUCKET>/<REPORT_PREFIX>/<source>/<export>/<run_id>/`` (without
``--export``: ``.../<source>/<run_id>/``). After a load the job writes ``--RESULT_KEY`` (a small JSON
with the run id and its HTML report's s3:// URI) in the report bucket: the state machine's output
links it from there.

TLS is verified by default: ``--DB_SSLMODE verify-full`` checks that the server's certificate
chains to a CA of ``--DB_SSLROOTCERT`` (the RDS CA bundle, an ``s3://`` URI read with the job's
role or a local path) and names the host in the secret. Without a bundle the job refuses to
start (exit 2); ``--DB_SSLMODE require`` (encrypted, not authenticated) must be asked for.

Glue's launcher installs each ``--extra-py-files`` wheel (packaging, python-calamine - the one
xlsx reader - and the package, none declaring a dependency) with ``pip install --target`` and
runs this script with that directory on ``sys.path``; pandas, numpy and pg8000 come from the
analytics library set as they are.

Keep this file Python 3.9 compatible (no ``match``, no ``X | Y`` annotations at runtime).

Exit codes are the package's (2 configuration, 3 input file, 4 database, 5 quality gate, 6 data
loaded but the report or the metrics not published - locally too), 1 for anything else.
Any non-zero exit marks the Glue run FAILED; the last stderr line says why in one line.
"""

import datetime
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

try:  # the package's wheel (--extra-py-files): without it, main() fails in one line
    from healthtech_etl.glue_args import (
        JobArgumentParser,
        JobFailure,
        aws_error_code,
        download_ca_bundle,
        join_values,
        read_secret,
    )
except ImportError:
    pass

REQUIRED_ARGS = ("RAW_BUCKET", "DOCTORS_KEY", "APPOINTMENTS_KEY", "DB_SECRET_ARN", "REPORT_BUCKET", "REPORT_PREFIX")
OPTIONAL_ARGS = {
    "AS_OF": "",  # YYYY-MM-DD; empty: today (UTC)
    "TRIGGER_KEY": "",  # the object whose upload started the run ...
    "TRIGGER_VERSION": "",  # ... and its version id ("null"/empty: read the latest version)
    "DOCTORS_VERSION": "",  # exact versions pinned by the state machine (empty/"null": see TRIGGER_*)
    "APPOINTMENTS_VERSION": "",
    "DB_SSLMODE": "verify-full",  # disable | prefer | require | verify-ca | verify-full
    "DB_SSLROOTCERT": "",  # CA bundle (local path or s3:// URI) for verify-ca / verify-full
    "LOAD_MODE": "replace",  # replace | merge (upsert by id, keep history; see the README)
    "source": "default",  # the clinic: raw/<source>/<export>/ (healthtech_etl.exports.validate_source)
    "export": "",  # the export folder's name: the reports' folder
    "export_date": "",  # YYYY-MM-DD; empty: the package's rule
    "RESULT_KEY": "",  # where to write the loaded run's id and report links (empty: nowhere)
}
ARG_HELP = {
    "DB_SSLMODE": "TLS to the database (default verify-full: the server's certificate must chain to "
                  "--DB_SSLROOTCERT and name the host; require: encrypted but not authenticated)",
    "DB_SSLROOTCERT": "CA bundle for verify-ca/verify-full: s3://bucket/key (read with the job's role) "
                      "or a local path",
}
NO_VERSION = ("", "null", "none")
METRIC_NAMESPACE = "HealthTechETL"
PERCENT_METRICS = {
    "id_completeness": "IdCompleteness",
    "referential_integrity": "ReferentialIntegrity",
    "duplicate_rate": "DuplicateRate",
    "typing_success": "TypingSuccess",
    "acceptance_rate": "AcceptanceRate",
}
EXIT_UNEXPECTED = 1
EXIT_PUBLISH_FAILED = 6

logger = logging.getLogger("healthtech_etl.glue_job")


def _given(argv: Sequence[str], name: str) -> bool:
    flag = f"--{name}"
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def _joined(argv: Sequence[str]) -> list[str]:
    """``--NAME value`` -> ``--NAME=value`` for our names (see ``join_values``); argv[0] as it is."""
    return list(argv[:1]) + join_values(argv[1:], REQUIRED_ARGS + tuple(OPTIONAL_ARGS))


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    """``{NAME: value}`` for every required and optional argument (optional ones defaulted).

    On Glue, ``getResolvedOptions`` (it fails on options that are asked for but absent, so an
    optional one is only asked for when present in argv); elsewhere argparse with the same names.
    Unknown arguments (Glue adds ``--job-bookmark-option``, ``--JOB_RUN_ID``...) are ignored."""
    try:
        from awsglue.utils import getResolvedOptions  # type: ignore[import-not-found]
    except ImportError:
        getResolvedOptions = None  # noqa: N806 - awsglue's name
    argv = _joined(argv)

    if getResolvedOptions is not None:
        wanted = list(REQUIRED_ARGS) + [name for name in OPTIONAL_ARGS if _given(argv, name)]
        try:
            resolved = getResolvedOptions(list(argv), wanted)
        except (Exception, SystemExit) as exc:  # GlueArgumentError, or argparse's SystemExit
            raise JobFailure(f"bad job arguments: {exc}", 2) from None
        values = {name: resolved.get(name) for name in wanted}
    else:
        parser = JobArgumentParser(
            prog="glue_etl.py",
            allow_abbrev=False,
            description="healthtech-etl Glue job: S3 workbooks -> PostgreSQL, report + metrics.",
        )
        for name in REQUIRED_ARGS:
            parser.add_argument(f"--{name}", required=True)
        for name, default in OPTIONAL_ARGS.items():
            parser.add_argument(f"--{name}", default=default, help=ARG_HELP.get(name))
        parsed, _unknown = parser.parse_known_args(list(argv[1:]))
        values = vars(parsed)
    args = {name: str(values.get(name) or "").strip() for name in REQUIRED_ARGS}
    for name, default in OPTIONAL_ARGS.items():
        value = values.get(name)
        args[name] = default if value is None else str(value).strip()
    empty = [name for name in REQUIRED_ARGS if not args[name]]
    if empty:
        raise JobFailure(f"bad job arguments: empty value for --{', --'.join(empty)}", 2)
    return args


def parse_as_of(text: str) -> datetime.date:
    if not text:
        return datetime.datetime.now(datetime.timezone.utc).date()
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise JobFailure(f"bad job arguments: --AS_OF must be YYYY-MM-DD (got {text!r})", 2) from None


def pinned_version(key: str, trigger_key: str, trigger_version: str) -> Optional[str]:
    """The version to read for ``key``: the trigger's exact version when the trigger is this
    object and a real version id was given, else None (the latest version)."""
    if trigger_key and key == trigger_key and trigger_version.lower() not in NO_VERSION:
        return trigger_version
    return None


def download_object(s3: Any, bucket: str, key: str, version: Optional[str], target: Path) -> dict[str, str]:
    """Stream one object to ``target``; return ``{"uri", "version"}`` of what was actually read."""
    uri = f"s3://{bucket}/{key}"
    request = {"Bucket": bucket, "Key": key}
    if version:
        request["VersionId"] = version
    try:
        response = s3.get_object(**request)
        with target.open("wb") as handle:
            shutil.copyfileobj(response["Body"], handle, 1 << 20)
    except Exception as exc:  # botocore ClientError / network errors
        code = aws_error_code(exc)
        what = f"{uri}" + (f" (version {version})" if version else "")
        if code in ("NoSuchKey", "404", "NoSuchVersion", "NoSuchBucket", "InvalidArgument"):
            raise JobFailure(f"input workbook {what} not found ({code})", 3) from None
        if code in ("AccessDenied", "403"):
            raise JobFailure(f"no permission to read {what} ({code})", 3) from None
        raise JobFailure(f"cannot read {what}: {code}", 3) from None
    read_version = response.get("VersionId") or version or "null"
    return {"uri": uri, "version": str(read_version)}


def resolve_ca_bundle(s3: Any, location: str, work_dir: Path) -> Optional[str]:
    """A local path to the CA bundle: as given, or downloaded from an s3:// URI into work_dir."""
    if not location:
        return None
    if location.startswith("s3://"):
        bucket, _, key = location[len("s3://"):].partition("/")
        if not bucket or not key:
            raise JobFailure(f"bad job arguments: --DB_SSLROOTCERT {location!r} is not s3://bucket/key", 2)
        return download_ca_bundle(s3, location, work_dir)
    if not Path(location).is_file():
        raise JobFailure(f"bad job arguments: CA bundle {location} does not exist", 2)
    return location


def report_prefix(prefix: str, run_id: str, source: str = "", export: str = "") -> str:
    """``<prefix>/<source>/<export>/<run_id>/`` (the empty parts left out)."""
    parts = [part.strip("/") for part in (prefix, source, export, run_id) if part.strip("/")]
    return "/".join(parts) + "/"


def parse_export_date(text: str) -> Optional[datetime.date]:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise JobFailure(f"bad job arguments: --export_date must be YYYY-MM-DD (got {text!r})", 2) from None


def etl_settings(args: dict[str, str], as_of: datetime.date, report_dir: Path) -> Any:
    """The package's settings of this run: the source and the export date go with it."""
    from healthtech_etl.pipeline import EtlSettings

    return EtlSettings(as_of=as_of, report_dir=report_dir, log_dir=None, mode=args["LOAD_MODE"] or "replace",
                       source=args["source"] or "default", export_date=parse_export_date(args["export_date"]))


def write_result(s3: Any, args: dict[str, str], summary: dict[str, Any]) -> None:
    """The loaded run's id and report links at --RESULT_KEY (read by the state machine)."""
    if not args["RESULT_KEY"]:
        return
    fields = ("run_id", "status", "mode", "source", "export", "report", "html_report")
    body = json.dumps({"reports": summary["report"], **{name: summary.get(name) for name in fields}}, default=str)
    s3.put_object(Bucket=args["REPORT_BUCKET"], Key=args["RESULT_KEY"], Body=body.encode("utf-8"),
                  ContentType="application/json")


_CONTENT_TYPES = {".json": "application/json", ".csv": "text/csv; charset=utf-8", ".log": "text/plain; charset=utf-8",
                  ".html": "text/html; charset=utf-8"}
HTML_REPORT = "quality_report.html"  # s3://<report bucket>/<prefix>/<run_id>/quality_report.html


def upload_reports(s3: Any, report_dir: Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under report_dir (report, rejected rows, query results); return the URIs."""
    uploaded = []
    for path in sorted(p for p in report_dir.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(report_dir).as_posix()
        content_type = _CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
        uploaded.append(f"s3://{bucket}/{key}")
    return uploaded


def metric_data(report: dict[str, Any], timestamp: datetime.datetime) -> list[dict[str, Any]]:
    """The five quality metrics (Percent) plus rows loaded / rejected (Count), no dimensions."""
    data = [
        {"MetricName": name, "Value": float(report["metrics"][key]["value"]), "Unit": "Percent", "Timestamp": timestamp}
        for key, name in PERCENT_METRICS.items()
    ]
    counts = report["counts"]
    for name, field in (("RowsLoaded", "loaded"), ("RowsRejected", "rejected")):
        total = sum(int(counts[entity][field]) for entity in ("doctors", "appointments"))
        data.append({"MetricName": name, "Value": float(total), "Unit": "Count", "Timestamp": timestamp})
    return data


def run_job(args: dict[str, str], work_dir: Path) -> dict[str, Any]:
    """Everything between parsed arguments and the exit: returns a summary for the log."""
    import boto3

    from healthtech_etl.db import DbConfig
    from healthtech_etl.pipeline import InputFile, run_etl
    from healthtech_etl.queries import run_queries

    as_of = parse_as_of(args["AS_OF"])
    s3 = boto3.client("s3")
    sslmode = args["DB_SSLMODE"] or OPTIONAL_ARGS["DB_SSLMODE"]
    if sslmode in ("verify-ca", "verify-full") and not args["DB_SSLROOTCERT"]:
        raise JobFailure(f"bad job arguments: --DB_SSLMODE {sslmode} needs a CA bundle: pass --DB_SSLROOTCERT "
                         "s3://bucket/key or a local path (or --DB_SSLMODE require, unverified)", 2)
    secret = read_secret(boto3.client("secretsmanager"), args["DB_SECRET_ARN"], not_found=True)
    ca_bundle = resolve_ca_bundle(s3, args["DB_SSLROOTCERT"], work_dir)
    db_config = DbConfig.from_secret(secret, sslmode=sslmode, sslrootcert=ca_bundle)
    logger.info("database: %s, sslmode=%s", db_config.describe(), db_config.sslmode)

    inputs = {}
    for entity, key_arg in (("doctors", "DOCTORS_KEY"), ("appointments", "APPOINTMENTS_KEY")):
        key = args[key_arg]
        version = pinned_version(key, key, args[f"{entity.upper()}_VERSION"]) or pinned_version(
            key, args["TRIGGER_KEY"], args["TRIGGER_VERSION"]
        )
        target = work_dir / "input" / entity / (Path(key).name or f"{entity}.xlsx")
        target.parent.mkdir(parents=True, exist_ok=True)
        read = download_object(s3, args["RAW_BUCKET"], key, version, target)
        name = read["uri"] + (f"?versionId={read['version']}" if read["version"] != "null" else "")
        logger.info("read %s (%s bytes)%s", name, target.stat().st_size, " [pinned by trigger]" if version else "")
        inputs[entity] = InputFile(path=target, name=name)

    report_dir = work_dir / "report"
    settings = etl_settings(args, as_of, report_dir)
    try:
        result = run_etl(inputs["doctors"], inputs["appointments"], db_config, settings)
    except Exception as exc:
        page = _upload_failed_run_report(s3, report_dir, args)
        if page and hasattr(exc, "exit_code"):  # the failure line (and so the alert) links the report
            raise JobFailure(f"{exc} (report: {page})", exc.exit_code) from None
        raise
    prefix = report_prefix(args["REPORT_PREFIX"], result.run_id, args["source"], args["export"])
    if result.exit_code == EXIT_PUBLISH_FAILED:  # loaded, but the local report could not be written
        raise JobFailure(str(result.warning), EXIT_PUBLISH_FAILED)
    try:
        # The business questions on the freshly loaded data, saved next to the report.
        queries = run_queries(db_config, out_dir=report_dir / "queries")
        uploaded = upload_reports(s3, report_dir, args["REPORT_BUCKET"], prefix)
        boto3.client("cloudwatch").put_metric_data(
            Namespace=METRIC_NAMESPACE,
            MetricData=metric_data(result.report, datetime.datetime.now(datetime.timezone.utc)),
        )
        summary = {
            "run_id": result.run_id,
            "status": result.report.get("status"),
            "mode": result.report.get("mode"),
            "source": args["source"],
            "export": args["export"],
            "counts": result.report.get("counts"),
            "report": f"s3://{args['REPORT_BUCKET']}/{prefix}",
            "html_report": f"s3://{args['REPORT_BUCKET']}/{prefix}{HTML_REPORT}",
            "objects": len(uploaded),
            "queries": [query.name for query in queries],
        }
        write_result(s3, args, summary)
    except Exception as exc:
        raise JobFailure(
            f"run {result.run_id} WAS loaded, but its queries/report/metrics failed: "
            f"{aws_error_code(exc)}: {str(exc)[:200]}",
            EXIT_PUBLISH_FAILED,
        ) from None
    return summary


def _upload_failed_run_report(s3: Any, report_dir: Path, args: dict[str, str]) -> Optional[str]:
    """A run stopped by the quality gate (or a failed load) still wrote its report: keep it.
    Returns the S3 URI of its HTML page when that was uploaded."""
    report_path = report_dir / "quality_report.json"
    if not report_path.is_file():
        return None
    try:
        run_id = json.loads(report_path.read_text(encoding="utf-8"))["run_id"]
        prefix = report_prefix(args["REPORT_PREFIX"], str(run_id), args["source"], args["export"])
        uploaded = upload_reports(s3, report_dir, args["REPORT_BUCKET"], prefix)
        logger.info("report of the failed run uploaded to s3://%s/%s", args["REPORT_BUCKET"], prefix)
    except Exception as exc:  # best effort: the original error is what matters
        logger.warning("could not upload the report of the failed run: %s", aws_error_code(exc))
        return None
    return next((uri for uri in uploaded if uri.endswith("/" + HTML_REPORT)), None)


def _fail(exit_code: int, message: str) -> int:
    logger.error("ETL job failed (exit %s): %s", exit_code, message)
    print(f"healthtech-etl glue job FAILED (exit {exit_code}): {message}", file=sys.stderr, flush=True)
    return exit_code


def _job(argv: Sequence[str]) -> dict[str, Any]:
    args = parse_args(argv)
    logger.info("job arguments: %s", json.dumps(args, sort_keys=True))  # no secret in them
    with tempfile.TemporaryDirectory(prefix="healthtech-etl-") as tmp:
        return run_job(args, Path(tmp))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        import python_calamine  # noqa: F401 - the workbook reader, shipped beside the package's wheel

        from healthtech_etl.glue_args import run_reported
        from healthtech_etl.logs import configure_logging
    except ImportError as exc:
        return _fail(EXIT_UNEXPECTED, f"the healthtech_etl package or python-calamine is not installed ({exc}); "
                                      "pass their wheels (and packaging's) in --extra-py-files")
    configure_logging(json_logs=True, log_dir=None, level=os.environ.get("LOG_LEVEL", "INFO"))
    code, summary = run_reported(lambda: _job(argv), _fail, logger)  # the package's codes, as the CLI's
    if code:
        return code
    logger.info("ETL job succeeded: %s", json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
