"""Load one run into PostgreSQL atomically: lock, TRUNCATE, COPY, ledger, commit - in one transaction
under an advisory lock, so concurrent runs serialise and a failure leaves the previous data as it was.
pandas, the COPY encoder and merge are imported by the functions that use them: the run history
(``runs``...) imports this module without them."""

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional

from . import schema
from .db import DEFAULT_KEEP_RUNS, DbConfig, _short, close_quietly, connect, rollback_quietly
from .errors import DatabaseError, EtlError
from .redact import redact
from .schema import APPOINTMENTS, DOCTORS, ETL_REJECTIONS, ETL_RUNS, REJECTION_COLUMNS, sql
from .schema import LOAD_MODES as LOAD_MODES  # re-exported

if TYPE_CHECKING:
    import pandas as pd

    from .copy_data import Chunk

logger = logging.getLogger(__name__)

# Arbitrary constant shared by every healthtech-etl process: "the load lock".
ADVISORY_LOCK_KEY = 7_412_202_511
# The lock, and the session holding it (pid, start) for record_failed_run.
_LOCK = sql("SELECT pg_advisory_xact_lock(:key), pg_backend_pid(),"
            " (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())")
# Ending it rolls its transaction back - unless that is a COMMIT in flight, which must finish.
_END_SESSION = sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE pid = :pid AND backend_start = :started AND query <> 'COMMIT'")
# Loads of this process that took the lock and did not commit: run id -> (pid, backend start).
_UNSETTLED: dict[str, tuple[int, datetime]] = {}
_DDL = ";\n".join(schema.schema_statements())
_NOT_RECORDED = "could not record the %s run %s in etl_runs: %s"


@dataclass
class RunRecord:
    """What the ledger (``etl_runs``) says about one run (with its status, end and error)."""

    run_id: str
    started_at: datetime
    doctors_file: str
    doctors_sha256: str
    appointments_file: str
    appointments_sha256: str
    counts: dict[str, Any]
    metrics: dict[str, Any]
    mode: str = "replace"  # one of LOAD_MODES


# A run id is written once (a retry of the same run is a no-op).
_INSERT_RUN = sql(
    "INSERT INTO {etl_runs} ({columns}) VALUES ({values}) ON CONFLICT (run_id) DO NOTHING",
    columns=", ".join(ETL_RUNS.names),
    values=", ".join(f"CAST(:{c.name} AS jsonb)" if c.type == "jsonb" else f":{c.name}" for c in ETL_RUNS.columns),
)
_SUCCEEDED = sql("UPDATE {etl_runs} SET status = 'succeeded', finished_at = :finished WHERE run_id = :run_id")
_RUN_STATUS = sql("SELECT status FROM {etl_runs} WHERE run_id = :run_id")
_TRUNCATE = sql("TRUNCATE {appointments}, {doctors}")
# Rows of all but the :keep most recent runs of a table with a run_id column.
_PRUNE = """DELETE FROM {table} r USING (
        SELECT run_id FROM {etl_runs} ORDER BY started_at DESC, run_id DESC OFFSET :keep
    ) old WHERE r.run_id = old.run_id"""


def ensure_schema(connection: Any) -> None:
    """Create the schema objects if missing (inside the locked transaction), in one round trip."""
    connection.run(_DDL)


def load_run(config: DbConfig, run: RunRecord, doctors: "pd.DataFrame", appointments: "pd.DataFrame",
             rejected: "dict[str, pd.DataFrame]", source_files: dict[str, str],
             keep_runs: int = DEFAULT_KEEP_RUNS,
             before_commit: Optional[Callable[[], None]] = None) -> Optional[dict[str, Any]]:
    """Replace the tables' rows with this run's (``run.mode`` "replace") or merge them in
    (returns merge.py's counts), record the run and prune ``etl_rejections`` to ``keep_runs``
    runs - all or nothing. ``rejected``/``source_files``: entity -> rejection frame / file name.
    An :class:`EtlError` from ``before_commit`` (called last) rolls back and is raised as it is."""
    from . import bulk

    changes = None
    connection = connect(config)
    # A worker encodes the rejections while this thread sends the appointments (and waits).
    workers = ThreadPoolExecutor(max_workers=1)
    try:
        prepared = [workers.submit(prepare_rejections, run.run_id, frame, source_files[entity])
                    for entity, frame in rejected.items() if len(frame)]
        connection.run("START TRANSACTION")
        _, pid, started = connection.run(_LOCK, key=ADVISORY_LOCK_KEY)[0]
        _UNSETTLED[run.run_id] = (pid, started)
        ensure_schema(connection)
        insert_run(connection, run, "running")
        changes = _write_tables(connection, run, doctors, appointments)
        for data in prepared:  # last: their COPY data is made meanwhile
            bulk.send(connection, ETL_REJECTIONS, REJECTION_COLUMNS, data.result())
        prune_old_runs(connection, ETL_REJECTIONS.qualified, keep_runs)
        if before_commit is not None:
            before_commit()
        connection.run(_SUCCEEDED, finished=datetime.now(timezone.utc), run_id=run.run_id)
        connection.run("COMMIT")
        _UNSETTLED.pop(run.run_id, None)
    except Exception as exc:
        rollback_quietly(connection)
        if isinstance(exc, EtlError):  # a DatabaseError, or before_commit's own error
            raise
        if connection_lost(exc):
            raise DatabaseError(f"lost the connection to PostgreSQL during the load ({_short(exc)}): "
                                "nothing was committed, previous data kept") from exc
        raise DatabaseError(f"load failed and was rolled back, previous data kept: {_short(exc)}") from exc
    finally:
        workers.shutdown(wait=True)
        close_quietly(connection)
    return changes


def _write_tables(connection: Any, run: RunRecord, doctors: "pd.DataFrame",
                  appointments: "pd.DataFrame") -> Optional[dict[str, Any]]:
    """Replace the tables' rows with the run's (TRUNCATE, COPY), or merge them in."""
    from . import bulk
    from .merge import merge_tables

    if run.mode == "merge":
        return merge_tables(connection, run.run_id, doctors, appointments)
    connection.run(_TRUNCATE)
    bulk.copy_frame(connection, DOCTORS, doctors[list(DOCTORS.names)])
    with bulk.rebuilt_indexes(connection, APPOINTMENTS, len(appointments)):
        bulk.copy_frame(connection, APPOINTMENTS, appointments[list(APPOINTMENTS.names)])
    return None


def prune_old_runs(connection: Any, table: str, keep_runs: int) -> None:
    """Delete the rows of ``table`` (ours, with ``run_id``) of all but the last ``keep_runs`` runs."""
    connection.run(sql(_PRUNE, table=table), keep=max(1, int(keep_runs)))


def connection_lost(exc: BaseException) -> bool:
    """A dead socket (OSError, pg8000 InterfaceError), or SQLSTATE 57P (shutdown) or 08."""
    import pg8000.exceptions as pg_errors

    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    if str(fields.get("C", "")).startswith(("57P", "08")):
        return True
    return isinstance(exc, (OSError, pg_errors.InterfaceError)) and not isinstance(exc, pg_errors.DatabaseError)


def record_failed_run(config: DbConfig, run: RunRecord, error: str, status: str = "failed",
                      finished_at: Optional[datetime] = None) -> Optional[str]:
    """Settle a load that ended without a clean answer: end its session if the server still
    has it, wait for the lock (a COMMIT in flight finishes), then write a ``status`` (failed, or
    gated for a gated run from the backlog) row ending at ``finished_at`` (default: now) unless the
    run is there. Returns its ledger status, None if not recorded. Never raises."""
    try:
        connection = connect(config)
    except DatabaseError as exc:
        logger.warning(_NOT_RECORDED, status, run.run_id, exc, extra={"console": False})
        return None
    try:
        session = _UNSETTLED.pop(run.run_id, None)
        if session is not None:
            connection.run(_END_SESSION, pid=session[0], started=session[1])
        connection.run("START TRANSACTION")
        connection.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
        ensure_schema(connection)
        insert_run(connection, run, status, finished_at=finished_at or datetime.now(timezone.utc), error=error)
        rows = connection.run(_RUN_STATUS, run_id=run.run_id)
        connection.run("COMMIT")
        return str(rows[0][0]) if rows else None
    except Exception as exc:  # the ledger must never hide the original failure
        logger.warning(_NOT_RECORDED, status, run.run_id, _short(exc), extra={"console": False})
        rollback_quietly(connection)
        return None
    finally:
        close_quietly(connection)


def insert_run(connection: Any, run: RunRecord, status: str, finished_at: Optional[datetime] = None,
               error: Optional[str] = None) -> None:
    """The run's ledger row (a run id is written once); a run that loaded nothing (failed, gated)
    counts its valid rows as ``would_load``, never as ``loaded``."""
    counts = counts_not_loaded(run.counts) if status in schema.NOT_LOADED_STATUSES else run.counts
    values = {**asdict(run), "status": status, "finished_at": finished_at,
              "error": None if error is None else redact(error)[:1000],
              "counts": json.dumps(counts), "metrics": json.dumps(run.metrics)}
    connection.run(_INSERT_RUN, **values)


def counts_not_loaded(counts: Optional[dict[str, Any]]) -> dict[str, Any]:
    """``counts`` (entity -> read/loaded/rejected/...) of a run that loaded nothing: each entity's
    ``loaded`` becomes 0 and its valid rows ``would_load`` (unchanged if already done)."""
    result: dict[str, Any] = {}
    for entity, numbers in (counts or {}).items():
        if isinstance(numbers, dict) and "loaded" in numbers and "would_load" not in numbers:
            numbers = {**numbers, "loaded": 0, "would_load": numbers["loaded"]}
        result[entity] = numbers
    return result


def rejections_for_copy(run_id: str, rejected: "pd.DataFrame", source_file: str) -> "pd.DataFrame":
    """``etl_rejections`` rows from a rejection frame: reasons as tuples, other cells as JSON."""
    import pandas as pd

    described = (schema.ENTITY, schema.SOURCE_ROW, schema.RECORD_ID, schema.REASONS)
    raw_columns = [c for c in rejected.columns if c not in described]
    # One object per "\n" (splitlines() would also split at U+2028 and the like, kept by JSON).
    raw_json = rejected[raw_columns].to_json(orient="records", lines=True, force_ascii=False).split("\n")
    codes, joined = pd.factorize(rejected[schema.REASONS].to_numpy(dtype=object))
    reasons = pd.Series([tuple(text.split(schema.REASON_SEPARATOR)) for text in joined] + [()], dtype=object)
    return pd.DataFrame({
        "run_id": run_id, "entity": rejected[schema.ENTITY].to_numpy(), "source_file": source_file,
        "row_number": rejected[schema.SOURCE_ROW].to_numpy(dtype="int64"),
        "record_id": rejected[schema.RECORD_ID].to_numpy(),
        "reasons": reasons.to_numpy()[codes], "raw": raw_json[:len(rejected)],
    }, columns=list(REJECTION_COLUMNS))


def prepare_rejections(run_id: str, rejected: "pd.DataFrame", source_file: str) -> "list[Chunk]":
    """One entity's ``etl_rejections`` COPY data, built in full (in a worker thread)."""
    from . import bulk

    return bulk.encode(ETL_REJECTIONS, rejections_for_copy(run_id, rejected, source_file))
