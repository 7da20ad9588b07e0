#!/usr/bin/env python3
"""Start a failed ETL execution again: ``make rerun EXECUTION=<execution ARN>``.

Reads the failed (or timed-out, or aborted) execution's input and starts a new execution of the
same state machine with it, named ``rerun-<original name>-<UTC time>`` and with ``rerun_of`` set to
the failed execution: its pair of workbooks was released when the run failed, and a claim the
failed execution still holds (timed out, aborted) is taken over. The export folder is looked at
again, so the latest versions of both workbooks are loaded.

Exit codes: 0 started (the new ARN and its console URL on stdout); 2 usage - no or a malformed
ARN, or an execution that is running or succeeded (nothing to re-run); 1 an AWS call failed
(credentials, access, the execution does not exist). Every failure is one line on stderr.

Usage: python infra/rerun.py <execution ARN>   (AWS credentials and region as for the AWS CLI)
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from typing import Any

RERUNNABLE = ("FAILED", "TIMED_OUT", "ABORTED")
_ARN = re.compile(r"^arn:aws[a-z-]*:states:([a-z0-9-]+):\d{12}:execution:[^:]+:[^:]+$")
NAME_MAX = 80


class RerunError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def rerun_name(name: str, now: datetime.datetime) -> str:
    """``rerun-<name>-<YYYYmmddTHHMMSS>`` within Step Functions' 80 characters."""
    stamp = now.strftime("%Y%m%dT%H%M%S")
    return f"rerun-{name[:NAME_MAX - len(stamp) - 7]}-{stamp}"


def rerun(sfn: Any, execution_arn: str, now: datetime.datetime | None = None) -> dict[str, str]:
    """Start the re-run; ``{"execution_arn", "name", "console_url"}``. RerunError says why not."""
    match = _ARN.match(execution_arn or "")
    if not match:
        raise RerunError(f"EXECUTION={execution_arn!r} is not a Step Functions execution ARN "
                         "(arn:aws:states:<region>:<account>:execution:<machine>:<name>)", 2)
    try:
        described = sfn.describe_execution(executionArn=execution_arn)
    except Exception as exc:  # botocore ClientError / credentials
        raise RerunError(f"cannot read execution {execution_arn}: {_code(exc)}", 1) from None
    if described["status"] not in RERUNNABLE:
        raise RerunError(f"execution {execution_arn} is {described['status']}: only a "
                         f"{', '.join(RERUNNABLE)} execution is re-run", 2)
    payload = json.loads(described.get("input") or "{}")
    payload["rerun_of"] = execution_arn
    payload["partner_wait_seconds"] = 0  # the folder is looked at now; a lone workbook is reported at once
    name = rerun_name(described["name"], now or datetime.datetime.now(datetime.timezone.utc))
    try:
        started = sfn.start_execution(stateMachineArn=described["stateMachineArn"], name=name,
                                      input=json.dumps(payload, sort_keys=True))
    except Exception as exc:
        raise RerunError(f"cannot start the re-run of {execution_arn}: {_code(exc)}", 1) from None
    region = match.group(1)
    return {
        "execution_arn": started["executionArn"],
        "name": name,
        "console_url": f"https://{region}.console.aws.amazon.com/states/home?region={region}"
                       f"#/v2/executions/details/{started['executionArn']}",
    }


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or type(exc).__name__


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].strip():
        print("rerun: give the failed execution's ARN: make rerun EXECUTION=arn:aws:states:...", file=sys.stderr)
        return 2
    try:
        import boto3

        result = rerun(boto3.client("stepfunctions", region_name=(_ARN.match(argv[0]) or [None, None])[1]),
                       argv[0].strip())
    except RerunError as exc:
        print(f"rerun: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # no credentials, no region...
        print(f"rerun: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        return 1
    print(f"started {result['execution_arn']}")
    print(f"console: {result['console_url']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
