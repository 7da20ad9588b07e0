"""What the Glue job scripts share (``glue_job/glue_etl.py``, ``glue_job/db_access.py``: each is
shipped as one file beside this package's wheel): job arguments, secrets, the CA bundle and the
one-line failure. AWS clients are passed in (no boto3 here). Python 3.9 (Glue Python shell)."""

import argparse
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from .errors import EtlError
from .redact import redact

EXIT_UNEXPECTED = 1
T = TypeVar("T")


class JobFailure(Exception):
    """A failure with its exit code; ``str()`` is the one-line reason (never a credential)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class JobArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are a :class:`JobFailure` (exit 2) instead of ``exit(2)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise JobFailure(f"bad job arguments: {message}", 2)


def join_values(argv: Sequence[str], names: Iterable[str]) -> list[str]:
    """``--NAME value`` -> ``--NAME=value`` for ``names``, so that a value starting with '-' (an S3
    version id can) is not taken for an option; other words (Glue's ``--JOB_RUN_ID``...) as they are."""
    ours = {f"--{name}" for name in names}
    joined, index = [], 0
    while index < len(argv):
        if argv[index] in ours and index + 1 < len(argv):
            joined.append(f"{argv[index]}={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


def aws_error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``AccessDenied``...), else the type's name."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or type(exc).__name__


def read_secret(secrets: Any, secret_id: str, needs: Sequence[str] = (), not_found: bool = False) -> dict:
    """The JSON object in a Secrets Manager secret, with a true value for each key in ``needs``
    (else exit 2). ``not_found``: say so for a missing secret instead of giving its error code."""
    try:
        text = secrets.get_secret_value(SecretId=secret_id).get("SecretString") or ""
    except Exception as exc:
        code = aws_error_code(exc)
        if not_found and code == "ResourceNotFoundException":
            raise JobFailure(f"database secret {secret_id} not found in Secrets Manager", 2) from None
        raise JobFailure(f"cannot read database secret {secret_id}: {code}", 2) from None
    try:
        secret = json.loads(text)
    except ValueError:
        secret = None
    if not isinstance(secret, dict) or not all(secret.get(key) for key in needs):
        with_keys = f" with {' and '.join(needs)}" if needs else ""
        raise JobFailure(f"database secret {secret_id} is not a JSON object{with_keys}", 2)
    return secret


def download_ca_bundle(s3: Any, location: str, work_dir: Path) -> str:
    """The local path of the CA bundle at ``s3://bucket/key``, downloaded into ``work_dir``."""
    bucket, _, key = location[len("s3://"):].partition("/")
    target = work_dir / "rds-ca-bundle.pem"
    try:
        s3.download_file(bucket, key, str(target))
    except Exception as exc:
        raise JobFailure(f"cannot download CA bundle {location}: {aws_error_code(exc)}", 2) from None
    return str(target)


def run_reported(job: Callable[[], T], fail: Callable[[int, str], int],
                 logger: logging.Logger) -> tuple[int, Optional[T]]:
    """``(0, job())``, or ``(code, None)`` once ``fail(code, reason)`` has reported the failure: a
    JobFailure's code, the package's (EtlError), else 1 with the traceback in the log only."""
    try:
        return 0, job()
    except JobFailure as exc:
        return fail(exc.exit_code, str(exc)), None
    except EtlError as exc:
        return fail(exc.exit_code, redact(str(exc))), None
    except Exception as exc:
        logger.exception("unexpected error")
        return fail(EXIT_UNEXPECTED, f"unexpected {type(exc).__name__}: {redact(str(exc))[:300]}"), None
