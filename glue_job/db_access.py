"""AWS Glue Python shell entry point of the two database-access jobs (same wheels as the ETL job).

``--TASK setup`` (job ``healthtech-etl-<env>-db-setup``, started by the stack on deploy and by
``make db-setup``): connects with the RDS master secret and creates or updates the ETL and reader
roles with the passwords of their own secrets (``healthtech_etl.db_roles``: idempotent, one
transaction). Its role may read the three secrets; no other job may read the master secret.

``--TASK ops`` (job ``healthtech-etl-<env>-ops``, started by ``make ops CMD="runs"``): runs one of
the read-only commands ``runs``, ``rejections`` or ``report`` as the reader role and writes what it
printed (and, for ``report``, the HTML page) to ``s3://<REPORT_BUCKET>/<OPS_PREFIX>/``. The run
list also goes to the job's log; rejected rows (patient ids) only to the encrypted bucket.

    python glue_job/db_access.py --TASK setup --MASTER_SECRET_ARN arn:... --ETL_SECRET_ARN arn:... \\
        --READER_SECRET_ARN arn:... [--DB_SSLMODE verify-full --DB_SSLROOTCERT s3://bucket/ca.pem]
    python glue_job/db_access.py --TASK ops --READER_SECRET_ARN arn:... --REPORT_BUCKET b \\
        --OPS_PREFIX reports/ops/20250101T000000Z --OPS_COMMAND "report --run-id 4f..."

Python 3.9 (Glue). Exit codes: the package's (2 configuration, 4 database), 1 anything else; the
last stderr line says why in one line.
"""

import argparse
import datetime
import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

try:  # the package's wheel (--extra-py-files): without it, main() fails in one line
    from healthtech_etl.glue_args import (
        JobArgumentParser,
        JobFailure,
        download_ca_bundle,
        join_values,
        read_secret,
    )
except ImportError:
    pass

TASKS = ("setup", "ops")
ARGS = {  # name: default (None: required by the task that uses it)
    "TASK": None,
    "MASTER_SECRET_ARN": "", "ETL_SECRET_ARN": "", "READER_SECRET_ARN": "",
    "DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": "",
    "REPORT_BUCKET": "", "OPS_PREFIX": "", "OPS_COMMAND": "runs",
    "SETUP_VERSION": "",  # set by the stack's custom resource: a new value starts the setup again
}
NEEDED = {"setup": ("MASTER_SECRET_ARN", "ETL_SECRET_ARN", "READER_SECRET_ARN"),
          "ops": ("READER_SECRET_ARN", "REPORT_BUCKET")}
OPS_COMMANDS = ("runs", "rejections", "report")
OPS_PREFIX = "reports/ops"
OUTPUT_FILE = "output.txt"
LOGIN = ("username", "password")  # what an RDS-style JSON secret must have here
EXIT_UNEXPECTED = 1

logger = logging.getLogger("healthtech_etl.glue_job.db_access")


def parse_args(argv: Sequence[str]) -> dict:
    """``{NAME: value}``; Glue adds arguments of its own (``--JOB_RUN_ID``...): ignored."""
    joined = join_values(argv, ARGS)  # a value may start with '-'
    parser = JobArgumentParser(prog="db_access.py", allow_abbrev=False)
    for name, default in ARGS.items():
        parser.add_argument(f"--{name}", default=default)
    values = vars(parser.parse_known_args(joined)[0])
    args = {name: str(values[name] or "").strip() for name in ARGS}
    if args["TASK"] not in TASKS:
        raise JobFailure(f"bad job arguments: --TASK must be one of {', '.join(TASKS)} (got {args['TASK']!r})", 2)
    missing = [name for name in NEEDED[args["TASK"]] if not args[name]]
    if missing:
        raise JobFailure(f"bad job arguments: --TASK {args['TASK']} needs --{', --'.join(missing)}", 2)
    return args


def ca_bundle(s3: Any, location: str, work_dir: Path) -> Optional[str]:
    """A local path to the CA bundle: as given, or downloaded from an s3:// URI."""
    if not location or not location.startswith("s3://"):
        return location or None
    return download_ca_bundle(s3, location, work_dir)


def db_config(secret: dict, args: dict, s3: Any, work_dir: Path) -> Any:
    from healthtech_etl.db import DbConfig

    sslmode = args["DB_SSLMODE"] or "verify-full"
    if sslmode in ("verify-ca", "verify-full") and not args["DB_SSLROOTCERT"]:
        raise JobFailure(f"bad job arguments: --DB_SSLMODE {sslmode} needs --DB_SSLROOTCERT", 2)
    return DbConfig.from_secret(secret, sslmode=sslmode, sslrootcert=ca_bundle(s3, args["DB_SSLROOTCERT"], work_dir))


def run_setup(args: dict, secrets: Any, s3: Any, work_dir: Path) -> dict:
    from contextlib import closing

    from healthtech_etl.db import connect
    from healthtech_etl.db_roles import Login, setup_roles

    master = db_config(read_secret(secrets, args["MASTER_SECRET_ARN"], LOGIN), args, s3, work_dir)
    logins = []
    for name in ("ETL_SECRET_ARN", "READER_SECRET_ARN"):
        secret = read_secret(secrets, args[name], LOGIN)
        if secret.get("dbname") and secret["dbname"] != master.database:
            raise JobFailure(f"secret {args[name]} is for database {secret['dbname']!r}, not {master.database!r}", 2)
        logins.append(Login(str(secret["username"]), str(secret["password"])))
    logger.info("database: %s; setting up roles %s", master.describe(), ", ".join(login.name for login in logins))
    with closing(connect(master)) as connection:
        done = setup_roles(connection, logins[0], logins[1])
    for statement in done:
        logger.info("setup: %s", statement)
    return {"etl_role": logins[0].name, "reader_role": logins[1].name, "statements": len(done),
            "version": args["SETUP_VERSION"]}


def ops_arguments(command: str, out_dir: Path) -> argparse.Namespace:
    """``runs --limit 5`` -> the CLI's own parsed arguments (same options as locally)."""
    from healthtech_etl.cli import build_parser

    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise JobFailure(f"bad --OPS_COMMAND: {exc}", 2) from None
    if not words or words[0] not in OPS_COMMANDS:
        raise JobFailure(f"bad --OPS_COMMAND {command!r}: one of {', '.join(OPS_COMMANDS)} with its options", 2)
    try:
        parsed = build_parser({}).parse_args(words)
    except SystemExit:  # the CLI's parser printed the one-line reason
        raise JobFailure(f"bad --OPS_COMMAND {command!r} (see the line above)", 2) from None
    parsed.report_dir = out_dir
    return parsed


def run_ops(args: dict, secrets: Any, s3: Any, work_dir: Path) -> dict:
    from healthtech_etl import history_commands

    config = db_config(read_secret(secrets, args["READER_SECRET_ARN"], LOGIN), args, s3, work_dir)
    out_dir = work_dir / "out"
    out_dir.mkdir()
    parsed = ops_arguments(args["OPS_COMMAND"], out_dir)
    logger.info("database: %s; command: %s", config.describe(), parsed.command)
    with (out_dir / OUTPUT_FILE).open("w", encoding="utf-8") as out:
        history_commands.run(parsed, config, out)
    prefix = (args["OPS_PREFIX"] or f"{OPS_PREFIX}/{datetime.datetime.utcnow():%Y%m%dT%H%M%SZ}").strip("/") + "/"
    uploaded = []
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(out_dir).as_posix()
        kind = "text/html; charset=utf-8" if path.suffix == ".html" else "text/plain; charset=utf-8"
        s3.upload_file(str(path), args["REPORT_BUCKET"], key, ExtraArgs={"ContentType": kind})
        uploaded.append(f"s3://{args['REPORT_BUCKET']}/{key}")
    if parsed.command == "runs":  # ids, times, file names and counts: no patient data
        for line in (out_dir / OUTPUT_FILE).read_text(encoding="utf-8").splitlines():
            logger.info("runs: %s", line)
    return {"command": parsed.command, "output": f"s3://{args['REPORT_BUCKET']}/{prefix}", "objects": uploaded}


def _fail(exit_code: int, message: str) -> int:
    logger.error("db access job failed (exit %s): %s", exit_code, message)
    print(f"healthtech-etl db access job FAILED (exit {exit_code}): {message}", file=sys.stderr, flush=True)
    return exit_code


def _job(argv: Sequence[str], client: Callable[[str], Any]) -> dict:
    args = parse_args(argv)
    logger.info("job arguments: %s", json.dumps(args, sort_keys=True))  # ARNs and names, no secret
    task = run_setup if args["TASK"] == "setup" else run_ops
    with tempfile.TemporaryDirectory(prefix="healthtech-db-access-") as tmp:
        return task(args, client("secretsmanager"), client("s3"), Path(tmp))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv[1:])
    try:
        import boto3

        from healthtech_etl.glue_args import run_reported
        from healthtech_etl.logs import configure_logging
    except ImportError as exc:
        return _fail(EXIT_UNEXPECTED, f"the healthtech_etl package is not installed ({exc}): pass its wheel in "
                                      "--extra-py-files")
    configure_logging(json_logs=True, log_dir=None, level=os.environ.get("LOG_LEVEL", "INFO"))
    code, summary = run_reported(lambda: _job(argv, boto3.client), _fail, logger)
    if code:
        return code
    logger.info("db access job succeeded: %s", json.dumps(summary))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
