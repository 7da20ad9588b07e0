"""Load one run into PostgreSQL atomically: lock, TRUNCATE, COPY, ledger, commit.

Everything happens in one transaction under an advisory lock, so concurrent runs serialise
and a failure at any point leaves the previous data exactly as it was. Data moves with
``COPY ... FROM STDIN`` in PostgreSQL's binary format (bulk.py); every other statement is
parameterised (the index rebuild runs DDL the catalog itself wrote). The tables, their columns
and types are schema.py's.
"""

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import pandas as pd

from . import bulk
from .copy_data import Chunk
from .db import DEFAULT_KEEP_RUNS, DbConfig, _short, close_quietly, connect, rollback_quietly
from .errors import DatabaseError, EtlError
from .merge import merge_tables
from .schema import (
    APPOINTMENTS,
    DOCTORS,
    ENTITY,
    ETL_REJECTIONS,
    ETL_RUNS,
    LOAD_MODES,
    REASON_SEPARATOR,
    REASONS,
    RECORD_ID,
    REJECTION_COLUMNS,
    SCHEMA,
    SOURCE_ROW,
    schema_statements,
    sql,
)

__all__ = [
    "ADVISORY_LOCK_KEY", "DDL", "DEFAULT_KEEP_RUNS", "LOAD_MODES", "SCHEMA", "RunRecord", "ensure_schema",
    "load_run", "prune_old_runs", "prune_rejections", "record_failed_run", "rejections_for_copy",
]

logger = logging.getLogger(__name__)

# Arbitrary constant shared by every healthtech-etl process: "the load lock".
ADVISORY_LOCK_KEY = 7_412_202_511
# The lock, and the session holding it (pid, start), noted for record_failed_run.
_LOCK = sql("SELECT pg_advisory_xact_lock(:key), pg_backend_pid(),"
            " (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())")
# Ending it rolls its transaction back - unless that is a COMMIT in flight, which must finish.
_END_SESSION = sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE pid = :pid AND backend_start = :started AND query <> 'COMMIT'")
# Loads of this process that took the lock and did not commit: run id -> (pid, backend start).
_UNSETTLED: dict[str, tuple[int, datetime]] = {}
# What ensure_schema runs: the schema, its tables, keys and indexes (schema.py's declaration).
DDL = tuple(schema_statements())


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


# The run's etl_runs row: every declared column, jsonb ones cast from JSON text; a run id is
# written once (a retry of the same run is a no-op).
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
    """Create the schema objects if missing (call inside the locked transaction). One round
    trip: the statements go as one simple query (no parameters)."""
    connection.run(";\n".join(DDL))


def load_run(
    config: DbConfig,
    run: RunRecord,
    doctors: pd.DataFrame,
    appointments: pd.DataFrame,
    rejected: dict[str, pd.DataFrame],
    source_files: dict[str, str],
    keep_runs: int = DEFAULT_KEEP_RUNS,
    before_commit: Optional[Callable[[], None]] = None,
) -> Optional[dict[str, Any]]:
    """Replace ``doctors`` and ``appointments`` with this run's rows (``run.mode`` "replace") or
    merge them in (``"merge"``: see merge.py, whose counts are returned), and record the run.

    ``rejected`` and ``source_files``: entity -> the cleaner's rejection frame / the input file
    name. ``etl_rejections`` keeps the rows of the last ``keep_runs`` runs (this one included),
    pruned in the same transaction. All or nothing. ``before_commit``: called last before
    COMMIT; an :class:`EtlError` it raises rolls the load back and is raised as it is. A lost
    connection is a DatabaseError; an error while closing never replaces the original one."""
    changes = None
    connection = connect(config)
    # The rejection rows are turned into COPY data by a worker thread while this one sends the
    # appointments and the server indexes them (time the client otherwise spends waiting).
    workers = ThreadPoolExecutor(max_workers=1)
    try:
        prepared = [
            workers.submit(_prepare_rejections, run.run_id, frame, source_files[entity])
            for entity, frame in rejected.items()
            if len(frame)
        ]
        connection.run("START TRANSACTION")
        _, pid, started = connection.run(_LOCK, key=ADVISORY_LOCK_KEY)[0]
        _UNSETTLED[run.run_id] = (pid, started)
        ensure_schema(connection)
        _insert_run(connection, run, "running")
        changes = _write_tables(connection, run, doctors, appointments)
        _write_rejections(connection, prepared)
        prune_rejections(connection, keep_runs)
        if before_commit is not None:
            before_commit()
        connection.run(_SUCCEEDED, finished=datetime.now(timezone.utc), run_id=run.run_id)
        connection.run("COMMIT")
        _UNSETTLED.pop(run.run_id, None)
    except Exception as exc:
        rollback_quietly(connection)
        if isinstance(exc, EtlError):  # a DatabaseError, or before_commit's own error
            raise
        raise _load_error(exc) from exc
    finally:
        workers.shutdown(wait=True)
        close_quietly(connection)
    return changes


def _write_tables(connection: Any, run: RunRecord, doctors: pd.DataFrame,
                  appointments: pd.DataFrame) -> Optional[dict[str, Any]]:
    """Replace the tables' rows with the run's (TRUNCATE, COPY), or merge them in."""
    if run.mode == "merge":
        return merge_tables(connection, run.run_id, doctors, appointments)
    connection.run(_TRUNCATE)
    bulk.copy_frame(connection, DOCTORS, doctors[list(DOCTORS.names)])
    with bulk.rebuilt_indexes(connection, APPOINTMENTS, len(appointments)):
        bulk.copy_frame(connection, APPOINTMENTS, appointments[list(APPOINTMENTS.names)])
    return None


def _write_rejections(connection: Any, prepared: list["Future[list[Chunk]]"]) -> None:
    """The rejected rows last: their COPY data is made meanwhile (the server takes as long for
    them before or after the appointments)."""
    for data in prepared:
        bulk.send(connection, ETL_REJECTIONS, REJECTION_COLUMNS, data.result())


def _load_error(exc: Exception) -> DatabaseError:
    """What a failed load raises for an error of its own: one line, saying whether the
    connection was lost."""
    if _connection_lost(exc):
        return DatabaseError(f"lost the connection to PostgreSQL during the load ({_short(exc)}): "
                             "nothing was committed, previous data kept")
    return DatabaseError(f"load failed and was rolled back, previous data kept: {_short(exc)}")


def prune_old_runs(connection: Any, table: str, keep_runs: int) -> None:
    """Delete the rows of ``table`` (a table with a ``run_id`` column, named by this package,
    never by input) that belong to all but the ``keep_runs`` most recent runs of ``etl_runs``:
    the one retention rule of ``etl_rejections`` and ``etl_run_reports`` (--keep-runs)."""
    connection.run(sql(_PRUNE, table=table), keep=max(1, int(keep_runs)))


def prune_rejections(connection: Any, keep_runs: int) -> None:
    """Delete the ``etl_rejections`` rows of all but the ``keep_runs`` most recent runs
    (call inside the load transaction: a failed load prunes nothing)."""
    prune_old_runs(connection, ETL_REJECTIONS.qualified, keep_runs)


def _connection_lost(exc: BaseException) -> bool:
    """A dead socket (pg8000 InterfaceError / OSError), or the server ending the session:
    SQLSTATE class 57P (terminated by an administrator, shutdown) or 08 (connection exception)."""
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    if str(fields.get("C", "")).startswith(("57P", "08")):
        return True
    try:
        import pg8000.exceptions as pg_errors
    except ImportError:  # pragma: no cover
        return isinstance(exc, OSError)
    return isinstance(exc, (OSError, pg_errors.InterfaceError)) and not isinstance(exc, pg_errors.DatabaseError)


def record_failed_run(config: DbConfig, run: RunRecord, error: str) -> Optional[str]:
    """Settle a load that ended without a clean answer (error, lost connection, interrupt):
    end its session if the server still has it (an interrupted statement leaves the socket
    open while the exception lives), wait until no load holds the lock - so a COMMIT still in
    flight has finished - then write a ``failed`` ledger row unless the run is already there.
    Returns the run's ledger status (``succeeded`` if it did commit after all, else
    ``failed``), None if the server is unreachable. Best effort: never raises, so the original
    failure is what the user sees."""
    from .redact import redact

    try:
        connection = connect(config)
    except DatabaseError as exc:
        logger.warning("could not record the failed run %s in etl_runs: %s", run.run_id, exc,
                       extra={"console": False})
        return None
    try:
        session = _UNSETTLED.pop(run.run_id, None)
        if session is not None:
            connection.run(_END_SESSION, pid=session[0], started=session[1])
        connection.run("START TRANSACTION")
        connection.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
        ensure_schema(connection)
        _insert_run(connection, run, "failed", finished_at=datetime.now(timezone.utc), error=redact(error)[:1000])
        rows = connection.run(_RUN_STATUS, run_id=run.run_id)
        connection.run("COMMIT")
        return str(rows[0][0]) if rows else None
    except Exception as exc:  # the ledger must never hide the original failure
        logger.warning("could not record the failed run %s in etl_runs: %s", run.run_id, _short(exc),
                       extra={"console": False})
        rollback_quietly(connection)
        return None
    finally:
        close_quietly(connection)


def _insert_run(
    connection: Any, run: RunRecord, status: str, finished_at: Optional[datetime] = None, error: Optional[str] = None
) -> None:
    """The run's ``etl_runs`` row (a run id is written once: a retry of the same run is a no-op)."""
    values = {**asdict(run), "status": status, "finished_at": finished_at, "error": error,
              "counts": json.dumps(run.counts), "metrics": json.dumps(run.metrics)}
    connection.run(_INSERT_RUN, **values)


def rejections_for_copy(run_id: str, rejected: pd.DataFrame, source_file: str) -> pd.DataFrame:
    """Rows for ``etl_rejections`` (its columns but the id) from one entity's rejection frame:
    the reason codes as a tuple, the raw cells (every column the cleaner kept) as one JSON object
    per row."""
    raw_columns = [c for c in rejected.columns if c not in (ENTITY, SOURCE_ROW, RECORD_ID, REASONS)]
    # JSON escapes line breaks inside strings: one object per "\n"-separated line (splitlines()
    # would also split at U+2028, U+0085 and the like, which JSON leaves as they are).
    raw_json = rejected[raw_columns].to_json(orient="records", lines=True, force_ascii=False).split("\n")
    codes, joined = pd.factorize(rejected[REASONS].to_numpy(dtype=object))
    reasons = pd.Series([tuple(text.split(REASON_SEPARATOR)) for text in joined] + [()], dtype=object)
    return pd.DataFrame(
        {
            "run_id": run_id,
            "entity": rejected[ENTITY].to_numpy(),
            "source_file": source_file,
            "row_number": rejected[SOURCE_ROW].to_numpy(dtype="int64"),
            "record_id": rejected[RECORD_ID].to_numpy(),
            "reasons": reasons.to_numpy()[codes],
            "raw": raw_json[:len(rejected)],
        },
        columns=list(REJECTION_COLUMNS),
    )


def _prepare_rejections(run_id: str, rejected: pd.DataFrame, source_file: str) -> list[Chunk]:
    """The ``etl_rejections`` COPY data of one entity, built in full (runs in a worker thread)."""
    return bulk.encode(ETL_REJECTIONS, rejections_for_copy(run_id, rejected, source_file))
