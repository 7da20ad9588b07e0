#!/usr/bin/env python3
"""Start a backfill: the backfill state machine of HealthTechEtl-<env> over every export under raw/,
or over the named clinics only. Needs AWS credentials (like deploy). docs/aws.md "Backfill".

    python infra/start_backfill.py [-c env=prod ...] [--sources clinic-a,clinic-b]
    make backfill CONTEXT="-c env=prod" SOURCES="clinic-a clinic-b"

Prints the execution ARN; the execution alerts the topic if a clinic fails. Errors: one line on
stderr, exit 2 (usage, unknown stack or output) or 1 (the AWS call failed).
"""

from __future__ import annotations

import datetime
import json
import re
import sys

SOURCE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # = healthtech_etl.exports.SOURCE_PATTERN
OUTPUT = "BackfillStateMachineArn"


def parse(argv: list[str]) -> tuple[str, list[str]]:
    """``(env, sources)`` from ``-c env=X`` (the last one wins, as for cdk) and ``--sources a,b``."""
    env, sources, args = "dev", [], list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--context") and args:
            key, _, value = args.pop(0).partition("=")
            env = value.strip().lower() if key == "env" and value.strip() else env
        elif arg == "--sources" and args:
            sources = [s for s in re.split(r"[,\s]+", args.pop(0)) if s]
        elif arg.startswith("--sources="):
            sources = [s for s in re.split(r"[,\s]+", arg.split("=", 1)[1]) if s]
        else:
            raise ValueError(f"unknown argument {arg!r}: use [-c env=NAME ...] [--sources a,b]")
    bad = [s for s in sources if not SOURCE.match(s)]
    if bad:
        raise ValueError(f"not a clinic name: {', '.join(repr(s) for s in bad)} (a-z, 0-9, '_' or '-')")
    return env, sources


def main(argv: list[str]) -> int:
    try:
        env, sources = parse(argv)
    except ValueError as exc:
        print(f"start_backfill: {exc}", file=sys.stderr)
        return 2
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    stack = f"HealthTechEtl-{env}"
    try:
        outputs = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
        arn = next((o["OutputValue"] for o in outputs if o["OutputKey"] == OUTPUT), None)
        if arn is None:
            print(f"start_backfill: {stack} has no output {OUTPUT}: deploy this version first", file=sys.stderr)
            return 2
        name = "backfill-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        started = boto3.client("stepfunctions").start_execution(
            stateMachineArn=arn, name=name, input=json.dumps({"sources": sources}))
    except (ClientError, BotoCoreError) as exc:
        print(f"start_backfill: {stack}: {str(exc)[:300]}", file=sys.stderr)
        return 1
    print(started["executionArn"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
