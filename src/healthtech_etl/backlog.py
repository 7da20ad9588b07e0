"""Failed and gated runs the ledger could not hear about yet (PostgreSQL was gone): kept in
``<log dir>/unrecorded_runs.jsonl`` (no data rows) and written by the next run that reaches it."""

import json
import logging
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .db import DbConfig
from .load import RunRecord, record_failed_run

logger = logging.getLogger(__name__)

BACKLOG_FILE = "unrecorded_runs.jsonl"


def remember(log_dir: Optional[Path], run: RunRecord, error: str, status: str = "failed") -> bool:
    """Append ``run`` (that ended now with ``status``) to the backlog; False if there is nowhere to keep it."""
    if log_dir is None:
        return False
    entry = {**asdict(run), "started_at": run.started_at.isoformat(), "error": error, "status": status,
             "finished_at": datetime.now(timezone.utc).isoformat()}
    try:
        with (Path(log_dir) / BACKLOG_FILE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, default=str) + "\n")
    except OSError:
        return False
    return True


def replay(config: DbConfig, log_dir: Optional[Path]) -> int:
    """Write the remembered runs to ``etl_runs`` with their status (the rest stay); returns how many."""
    if log_dir is None:
        return 0
    path = Path(log_dir) / BACKLOG_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    left: list[str] = []
    written = 0
    for line in lines:
        try:
            entry = json.loads(line)
            error, status = entry.pop("error"), entry.pop("status", "failed")  # an older entry: failed
            finished = entry.pop("finished_at", None)
            finished_at = None if finished is None else datetime.fromisoformat(finished)
            entry["started_at"] = datetime.fromisoformat(entry["started_at"])
            run = RunRecord(**entry)
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring an unreadable line of %s", path, extra={"console": False})
            continue
        if record_failed_run(config, run, error, status=status, finished_at=finished_at) is None:
            left.append(line)
        else:
            written += 1
            logger.info("recorded the earlier %s run %s in etl_runs", status, run.run_id)
    try:
        if left:
            path.write_text("\n".join(left) + "\n", encoding="utf-8")
        else:
            path.unlink()
    except OSError as exc:
        logger.warning("could not update %s: %s", path, exc, extra={"console": False})
    return written
