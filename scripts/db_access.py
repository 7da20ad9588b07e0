"""Operator access to the deployed database: start the db-setup or the ops Glue job, wait, show the result.

    python scripts/db_access.py db-setup [CDK context args, e.g. -c env=prod]
    python scripts/db_access.py ops "runs --limit 20" [-c env=prod]
    python scripts/db_access.py ops "report --run-id 4f..." [-c env=prod]

`make db-setup CONTEXT=...` and `make ops CONTEXT=... CMD="..."` call this. It needs AWS credentials
(boto3's usual chain: AWS_PROFILE, environment, SSO...) that may start and read the two Glue jobs and
read `reports/ops/` of the artifacts bucket. The environment comes from the context args as in
scripts/cdk.sh (the last `env=...`, else infra/cdk.json's, else dev); the bucket from the ops job's
own `--REPORT_BUCKET`. The ops output lands in `s3://<artifacts>/reports/ops/<time>/`: `runs` and
`rejections` print it here; `report` writes `<run_id>/quality_report.html` there (its URI is printed).

Exit codes: 0 done, 2 usage, 1 the job run failed or AWS refused (one line on stderr, why).
"""

import argparse
import datetime
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
JOBS = {"db-setup": "db-setup", "ops": "ops"}
OPS_PREFIX = "reports/ops"
DONE = ("SUCCEEDED", "FAILED", "TIMEOUT", "STOPPED", "ERROR", "EXPIRED")


def target_env(context: list) -> str:
    """The env a `-c env=...` / `--context env=...` among the args selects, else cdk.json's, else dev."""
    match = re.search(r'"env"\s*:\s*"([^"]*)"', (ROOT / "infra" / "cdk.json").read_text(encoding="utf-8"))
    env = match.group(1) if match else ""
    words = list(context)
    for index, word in enumerate(words):
        value = None
        if word in ("-c", "--context") and index + 1 < len(words):
            value = words[index + 1]
        elif word.startswith(("--context=", "-c=")):
            value = word.split("=", 1)[1]
        if value and value.startswith("env="):
            env = value[len("env="):]
    return env.strip().lower() or "dev"


def parse(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="db_access.py", description=__doc__.split("\n")[0])
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("command", nargs="?", default="runs", help="ops: runs | rejections | report, with options")
    parser.add_argument("--run-name", help="ops: the output folder under reports/ops/ (default: the UTC time)")
    parser.add_argument("--poll-seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args, context = parser.parse_known_args(argv)
    args.env = target_env(context)
    return args


def wait(glue: Any, job_name: str, run_id: str, poll_seconds: float) -> dict:
    state = ""
    while True:
        run = glue.get_job_run(JobName=job_name, RunId=run_id)["JobRun"]
        if run["JobRunState"] != state:
            state = run["JobRunState"]
            print(f"{job_name} run {run_id}: {state}", file=sys.stderr, flush=True)
        if state in DONE:
            return run
        time.sleep(poll_seconds)


def run(args: argparse.Namespace, session: Optional[Any] = None) -> int:
    import boto3

    session = session or boto3.session.Session()
    glue, s3 = session.client("glue"), session.client("s3")
    job_name = f"healthtech-etl-{args.env}-{JOBS[args.job]}"
    arguments, bucket, prefix = {}, "", ""
    if args.job == "ops":
        bucket = glue.get_job(JobName=job_name)["Job"]["DefaultArguments"]["--REPORT_BUCKET"]
        name = args.run_name or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        prefix = f"{OPS_PREFIX}/{name}"
        arguments = {"--OPS_COMMAND": args.command, "--OPS_PREFIX": prefix}
    run_id = glue.start_job_run(JobName=job_name, Arguments=arguments)["JobRunId"]
    finished = wait(glue, job_name, run_id, args.poll_seconds)
    if finished["JobRunState"] != "SUCCEEDED":
        reason = finished.get("ErrorMessage") or "no error message: see the job's log"
        print(f"db_access: {job_name} run {run_id} ended {finished['JobRunState']}: {reason}", file=sys.stderr)
        return 1
    if args.job == "ops":
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
        keys = sorted(item["Key"] for item in listing)
        if f"{prefix}/output.txt" in keys:
            body = s3.get_object(Bucket=bucket, Key=f"{prefix}/output.txt")["Body"].read().decode("utf-8")
            sys.stdout.write(body)
        for key in keys:
            print(f"s3://{bucket}/{key}", file=sys.stderr)
    return 0


def main(argv: Optional[list] = None) -> int:
    args = parse(list(sys.argv[1:] if argv is None else argv))
    try:
        return run(args)
    except Exception as exc:  # botocore errors: one line, never a traceback
        response = getattr(exc, "response", None) or {}
        code = response.get("Error", {}).get("Code") or type(exc).__name__
        print(f"db_access: {args.job} on env {args.env}: {code}: {str(exc)[:300]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
