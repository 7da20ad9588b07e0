"""Load one run into PostgreSQL atomically: lock, the source's rows replaced (or merged), COPY, ledger,
commit - in one transaction under an advisory lock, so concurrent runs serialise and a failure leaves
the previous data as it was. Under the lock, before anything is written, the export is checked
(:func:`check_export`) and, in merge mode, referential integrity judged again (merge.py).
pandas, the COPY encoder and merge are imported by the functions that use them: the run history
(``runs``...) imports this module without them."""

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Optional

from . import schema
from .db import DEFAULT_KEEP_RUNS, DbConfig, _short, close_quietly, connect, rollback_quietly
from .errors import DatabaseError, EtlError
from .exports import DEFAULT_SOURCE, StaleExport
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
    source: str = DEFAULT_SOURCE  # the clinic (exports.validate_source)
    export_date: Optional[date] = None


# A run id is written once (a retry of the same run is a no-op).
_INSERT_RUN = sql(
    "INSERT INTO {etl_runs} ({columns}) VALUES ({values}) ON CONFLICT (run_id) DO NOTHING",
    columns=", ".join(ETL_RUNS.names),
    values=", ".join(f"CAST(:{c.name} AS jsonb)" if c.type == "jsonb" else f":{c.name}" for c in ETL_RUNS.columns),
)
_SUCCEEDED = sql("UPDATE {etl_runs} SET status = 'succeeded', finished_at = :finished WHERE run_id = :run_id")
_RUN_STATUS = sql("SELECT status FROM {etl_runs} WHERE run_id = :run_id")
_TRUNCATE = sql("TRUNCATE {appointments}, {doctors}")
# The sources in the data tables (index scans of the keys' leading column).
_SOURCES = sql("SELECT (SELECT min(source) FROM {doctors}), (SELECT max(source) FROM {doctors}),"
               " (SELECT min(source) FROM {appointments}), (SELECT max(source) FROM {appointments})")
_DELETE_SOURCE = [sql("DELETE FROM {appointments} WHERE source = :source"),
                  sql("DELETE FROM {doctors} WHERE source = :source")]
# The run that loaded these bytes for this source, and the newest export date it has loaded.
# Merge: any load of these bytes merged them already; replace: only if the source's tables still hold
# them (its latest load was a replace of these very bytes).
_LOADED_BEFORE = sql("""SELECT (SELECT run_id FROM {etl_runs} r WHERE source = :source AND status = 'succeeded'
        AND doctors_sha256 = :doctors AND appointments_sha256 = :appointments AND (:mode = 'merge' OR (mode = 'replace'
        AND run_id = (SELECT run_id FROM {etl_runs} WHERE source = :source AND status = 'succeeded'
                      ORDER BY finished_at DESC LIMIT 1))) ORDER BY finished_at DESC LIMIT 1),
    (SELECT max(export_date) FROM {etl_runs} WHERE source = :source AND status = 'succeeded')""")
# Rows of all but the :keep most recent runs of a table with a run_id column.
_PRUNE = """DELETE FROM {table} r USING (
        SELECT run_id FROM {etl_runs} ORDER BY started_at DESC, run_id DESC OFFSET :keep
    ) old WHERE r.run_id = old.run_id"""


def ensure_schema(connection: Any) -> None:
    """Create the schema objects if missing (inside the locked transaction), in one round trip."""
    connection.run(_DDL)


def load_run(config: DbConfig, run: RunRecord, doctors: "pd.DataFrame", appointments: "pd.DataFrame",
             rejected: "dict[str, pd.DataFrame]", source_files: dict[str, str],
             keep_runs: int = DEFAULT_KEEP_RUNS, before_commit: Optional[Callable[[], None]] = None,
             allow_older: bool = False, judged_by: Optional[dict[str, Any]] = None) -> Optional[dict[str, Any]]:
    """Replace the source's rows with this run's (``run.mode`` "replace") or merge them in
    (returns merge.py's counts), record the run and prune ``etl_rejections`` to ``keep_runs``
    runs - all or nothing. ``rejected``/``source_files``: entity -> rejection frame / file name.
    Bytes this source already loaded, judged by the same ``judged_by`` settings (as_of, day_first,
    horizon_days): nothing written, returns ``{"already_loaded_by": run id}`` (unless ``allow_older``). An :class:`EtlError` from ``before_commit`` (called last) or
    :func:`check_export` rolls back and is raised as it is."""
    from . import bulk, merge

    changes = None
    connection = connect(config)
    # A worker encodes the rejections while this thread sends the appointments (and waits).
    workers = ThreadPoolExecutor(max_workers=1)
    try:
        prepared = [workers.submit(prepare_rejections, run.run_id, frame, source_files[entity], run.source)
                    for entity, frame in rejected.items() if len(frame)]
        connection.run("START TRANSACTION")
        _, pid, started = connection.run(_LOCK, key=ADVISORY_LOCK_KEY)[0]
        _UNSETTLED[run.run_id] = (pid, started)
        ensure_schema(connection)
        done = None if allow_older else check_export(connection, run, judged_by)
        if done is not None:
            rollback_quietly(connection)
            _UNSETTLED.pop(run.run_id, None)
            return {"already_loaded_by": done}
        if run.mode == "merge":  # a doctor may have gone since the run was cleaned
            appointments, late = merge.recheck_doctors(connection, run, doctors, appointments)
            if late is not None:
                prepared.append(workers.submit(prepare_rejections, run.run_id, late, source_files["appointments"],
                                               run.source))
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

    doctors, appointments = doctors.assign(source=run.source), appointments.assign(source=run.source)
    if run.mode == "merge":
        return merge_tables(connection, run, doctors, appointments)
    # Only this source in the tables (or none): TRUNCATE; else its rows are deleted, keys dropped.
    alone = set(connection.run(_SOURCES)[0]) <= {None, run.source}
    if alone:
        connection.run(_TRUNCATE)
    with bulk.rebuilt_indexes(connection, APPOINTMENTS, len(appointments)):
        for statement in [] if alone else _DELETE_SOURCE:
            connection.run(statement, source=run.source)
        bulk.copy_frame(connection, DOCTORS, doctors[list(DOCTORS.names)])
        bulk.copy_frame(connection, APPOINTMENTS, appointments[list(APPOINTMENTS.names)])
    return None


def check_export(connection: Any, run: RunRecord, judged_by: Optional[dict[str, Any]] = None) -> Optional[str]:
    """Under the load lock: the run that already loaded these bytes for this source with the same
    ``judged_by`` settings (its report snapshot says so; this run is then a no-op), else None;
    StaleExport (exit 2) for a merge of an export older than the newest the source has loaded."""
    done, newest = connection.run(_LOADED_BEFORE, source=run.source, doctors=run.doctors_sha256,
                                  appointments=run.appointments_sha256, mode=run.mode)[0]
    if done is not None and judged_by is not None and _judged_alike(connection, str(done), judged_by):
        return str(done)
    if run.mode == "merge" and newest is not None and run.export_date is not None and run.export_date < newest:
        raise StaleExport(f"the export of {run.export_date} is older than the newest source {run.source!r} has "
                          f"loaded ({newest}): not merged (--allow-older merges it anyway)")
    return None


def _judged_alike(connection: Any, run_id: str, judged_by: dict[str, Any]) -> bool:
    """Whether ``run_id``'s stored report was judged with ``judged_by`` (as_of and settings): the
    same bytes read with another as-of date or --day-first load other rows. No snapshot: False."""
    if not connection.run("SELECT to_regclass(:name) IS NOT NULL", name=schema.ETL_RUN_REPORTS.qualified)[0][0]:
        return False
    rows = connection.run(sql("SELECT report FROM {etl_run_reports} WHERE run_id = :run_id"), run_id=run_id)
    if not rows:
        return False
    report = rows[0][0] or {}
    stored = {"as_of": report.get("as_of"), **{key: (report.get("settings") or {}).get(key) for key in judged_by
                                                if key != "as_of"}}
    return stored == judged_by


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


def rejections_for_copy(run_id: str, rejected: "pd.DataFrame", source_file: str,
                        source: str = DEFAULT_SOURCE) -> "pd.DataFrame":
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
        "reasons": reasons.to_numpy()[codes], "raw": raw_json[:len(rejected)], "source": source,
    }, columns=list(REJECTION_COLUMNS))


def prepare_rejections(run_id: str, rejected: "pd.DataFrame", source_file: str,
                       source: str = DEFAULT_SOURCE) -> "list[Chunk]":
    """One entity's ``etl_rejections`` COPY data, built in full (in a worker thread)."""
    from . import bulk

    return bulk.encode(ETL_REJECTIONS, rejections_for_copy(run_id, rejected, source_file, source))
