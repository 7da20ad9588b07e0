"""Run history from the database: the ledger (``etl_runs``), rejected rows, aggregates of the
loaded appointments (GROUP BY in PostgreSQL) and the report snapshot each run stores
(``etl_run_reports``) so that its HTML page can be rebuilt from the database alone; and the record
of a run the quality gate stopped (:func:`record_gated_run`)."""

import json
import logging
from datetime import date, datetime, timezone
from typing import Any, Optional

from . import load, schema
from .db import DEFAULT_KEEP_RUNS, DbConfig, _short, close_quietly, connect, rollback_quietly
from .errors import ConfigError, DatabaseError
from .exports import DEFAULT_SOURCE
from .html_report import REJECTED_ROWS_SHOWN, ReportPage
from .load import counts_not_loaded, prune_old_runs
from .quality import overall_status
from .schema import ETL_RUN_REPORTS, ETL_RUNS, NOT_LOADED_STATUSES, REJECTION_COLUMNS, create_statements, sql

logger = logging.getLogger(__name__)

TREND_RUNS = 30
SNAPSHOT_LOCK_KEY = 7_412_202_512  # load.ADVISORY_LOCK_KEY + 1
SNAPSHOT_PRUNED_NOTE = (
    "This run's report snapshot was pruned from healthtech.etl_run_reports (it keeps the snapshots of the "
    "last --keep-runs runs): rebuilt from etl_runs alone, so as-of, readers, unknown status values, ignored "
    "columns and timings are not known."
)

# etl_run_reports, created by the first load that stores a snapshot (schema.py declares it).
REPORTS_DDL = ";\n".join(create_statements(ETL_RUN_REPORTS))
# What a gated run writes: the ledger tables only, never the data tables.
LEDGER_DDL = ";\n".join(schema.schema_statements(schema.LEDGER_TABLES))
FAILED_NOTE = "the load failed and was rolled back; the tables keep the previous data"

# A ledger row: every column of etl_runs; a rejected row: every column of etl_rejections but its id.
_RUN_SELECT = "SELECT {columns} FROM {etl_runs}"
_REJECTED_SELECT = ("SELECT {columns} FROM {etl_rejections} WHERE run_id = :run_id AND (CAST(:reason AS text)"
                    " IS NULL OR :reason = ANY (reasons)) ORDER BY entity DESC, row_number, id")
_REJECTED_COUNT = sql("SELECT count(*) FROM {etl_rejections} WHERE run_id = :run_id AND (CAST(:reason AS text)"
                      " IS NULL OR :reason = ANY (reasons))")
_REJECTED_BY_REASON = sql("SELECT code, count(*) FROM {etl_rejections}, unnest(reasons) AS code"
                          " WHERE run_id = :run_id GROUP BY code ORDER BY count(*) DESC, code")
# Of one source (a run's page shows its source's rows).
_PER_DAY = sql("SELECT CAST(booking_date AS date), status, count(*) FROM {appointments} WHERE source = :source"
               " GROUP BY 1, 2 ORDER BY 1, 2")
_PER_DOCTOR = sql("SELECT d.id, d.name, d.specialty, coalesce(a.confirmed, 0), coalesce(a.total, 0)"
                  " FROM {doctors} d LEFT JOIN (SELECT doctor_id, count(*) FILTER (WHERE status = 'confirmed')"
                  " AS confirmed, count(*) AS total FROM {appointments} WHERE source = :source GROUP BY doctor_id) a"
                  " ON a.doctor_id = d.id WHERE d.source = :source")
_LATEST_SUCCEEDED = sql("SELECT run_id FROM {etl_runs} WHERE status = 'succeeded' AND source = :source"
                        " ORDER BY finished_at DESC NULLS LAST, started_at DESC LIMIT 1")
_STORE_SNAPSHOT = sql("INSERT INTO {etl_run_reports} (run_id, report, aggregates)"
                      " VALUES (:run_id, CAST(:report AS jsonb), CAST(:aggregates AS jsonb)) ON CONFLICT (run_id)"
                      " DO UPDATE SET report = excluded.report, aggregates = excluded.aggregates, created_at = now()")
# Whether a later run - in the pruning order - still has its snapshot.
_LATER_SNAPSHOT = sql("SELECT EXISTS (SELECT 1 FROM {etl_run_reports} r JOIN {etl_runs} u USING (run_id) WHERE"
                      " (u.started_at, u.run_id) > (SELECT started_at, run_id FROM {etl_runs} WHERE run_id = :run_id))")
_SNAPSHOT = sql("SELECT report, aggregates FROM {etl_run_reports} WHERE run_id = :run_id")


_PRESENT = "SELECT attname FROM pg_attribute WHERE attrelid = CAST(:table AS regclass) AND attnum > 0 AND NOT attisdropped"


def _select(connection: Any, template: str, table: schema.Table, names: tuple[str, ...]) -> str:
    """``template`` with ``{columns}``: ``names``, those a database of an older release lacks (until
    its next load upgrades it) read as their default."""
    present = {row[0] for row in connection.run(_PRESENT, table=table.qualified)}
    return sql(template, columns=", ".join(name if name in present else
                                           f"{table.column(name).default or 'NULL'} AS {name}" for name in names))


def _run_select(connection: Any) -> str:
    return _select(connection, _RUN_SELECT, ETL_RUNS, ETL_RUNS.names)


def _exists(connection: Any, table: str) -> bool:
    """True once a run has created ``table``."""
    return bool(connection.run("SELECT to_regclass(:name) IS NOT NULL", name=table)[0][0])


def list_runs(connection: Any, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` runs, newest first, with duration and overall quality."""
    if not _exists(connection, ETL_RUNS.qualified):
        return []
    rows = connection.run(_run_select(connection) + " ORDER BY started_at DESC, run_id LIMIT :limit", limit=limit)
    return [_run_dict(row) for row in rows]


def get_run(connection: Any, run_id: Optional[str]) -> dict[str, Any]:
    """One ledger row (the latest run when ``run_id`` is None); ConfigError if there is none."""
    if not _exists(connection, ETL_RUNS.qualified):
        raise ConfigError("no run recorded in this database yet (healthtech.etl_runs does not exist)")
    if run_id is None:
        rows = connection.run(_run_select(connection) + " ORDER BY started_at DESC, run_id LIMIT 1")
        if not rows:
            raise ConfigError("no run recorded in this database yet")
    else:
        rows = connection.run(_run_select(connection) + " WHERE run_id = :run_id", run_id=run_id)
        if not rows:
            raise ConfigError(f"run {run_id!r} not found in healthtech.etl_runs (see 'healthtech-etl runs')")
    return _run_dict(rows[0])


def _run_dict(row: list[Any]) -> dict[str, Any]:
    run = dict(zip(ETL_RUNS.names, row))
    if run["status"] in NOT_LOADED_STATUSES and run["counts"]:  # rows of older releases said "loaded"
        run["counts"] = counts_not_loaded(run["counts"])
    appointments = (run["counts"] or {}).get("appointments") or {}
    started, finished = run["started_at"], run["finished_at"]
    run["duration_seconds"] = round((finished - started).total_seconds(), 3) if started and finished else None
    run["rows_read"] = appointments.get("read")
    run["rows_loaded"] = appointments.get("loaded") if run["status"] == "succeeded" else 0
    run["rows_rejected"] = appointments.get("rejected")
    run["quality"] = overall_status(run["metrics"]) if run["metrics"] else None
    return run


def trend_runs(connection: Any, until: Optional[datetime] = None, limit: int = TREND_RUNS,
               source: Optional[str] = None) -> list[dict[str, Any]]:
    """Up to ``limit`` runs (of ``source``, if given: a clinic's page shows its own history) started at
    or before ``until`` (default: all), oldest first."""
    if not _exists(connection, ETL_RUNS.qualified):
        return []
    # (A ledger of an older release, not yet upgraded, has no source column: all its runs are one source's.)
    of_source = source is not None and "source" in {row[0] for row in connection.run(_PRESENT,
                                                                                      table=ETL_RUNS.qualified)}
    rows = connection.run(_run_select(connection) + " WHERE started_at <= :until"
                          + (" AND source = :source" if of_source else "")
                          + " ORDER BY started_at DESC, run_id LIMIT :limit",
                          until=until or datetime.now(timezone.utc), limit=limit,
                          **({"source": source} if of_source else {}))
    runs = [_run_dict(row) for row in reversed(rows)]
    return [{"run_id": run["run_id"], "started_at": run["started_at"].isoformat(), "status": run["status"],
             "mode": run["mode"], "appointments_file": file_name(run["appointments_file"]),
             "metrics": {key: metric.get("value") for key, metric in (run["metrics"] or {}).items()},
             "loaded": run["rows_loaded"], "rejected": run["rows_rejected"]} for run in runs]


def file_name(stored: Optional[str]) -> Optional[str]:
    """An input's file name as the ledger stores it, without folders or S3 version: the same file
    across runs (``s3://b/in/appointments.xlsx?versionId=3`` -> ``appointments.xlsx``)."""
    if not stored:
        return stored
    return stored.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or stored


def rejected_rows(connection: Any, run_id: str, reason: Optional[str] = None,
                  limit: Optional[int] = None) -> list[dict[str, Any]]:
    """Rejected rows of a run (doctors first, then by row number), optionally of one reason."""
    statement = _select(connection, _REJECTED_SELECT, schema.ETL_REJECTIONS, REJECTION_COLUMNS)
    params: dict[str, Any] = {"run_id": run_id, "reason": reason}
    if limit is not None:
        statement += " LIMIT :limit"
        params["limit"] = limit
    return [dict(zip(REJECTION_COLUMNS, row)) for row in connection.run(statement, **params)]


def count_rejected(connection: Any, run_id: str, reason: Optional[str] = None) -> int:
    """How many rejected rows of the run ``etl_rejections`` holds (of one reason)."""
    return int(connection.run(_REJECTED_COUNT, run_id=run_id, reason=reason)[0][0])


def appointment_aggregates(connection: Any, top_doctors: Optional[int] = None,
                           source: str = DEFAULT_SOURCE) -> dict[str, Any]:
    """The aggregates (see :mod:`healthtech_etl.aggregates`) of the source's appointments in the tables now:
    two GROUP BY scans in the server; the reference for ``frame_aggregates``."""
    from .aggregates import TOP_DOCTORS, from_doctor_counts, per_day_rows  # numpy, pandas: not for ``runs``

    by_day = connection.run(_PER_DAY, source=source)
    doctors = connection.run(_PER_DOCTOR, source=source)
    return {
        "per_day": per_day_rows((row[0].isoformat() for row in by_day), (row[1] for row in by_day),
                                (row[2] for row in by_day)),
        **from_doctor_counts(doctors, TOP_DOCTORS if top_doctors is None else top_doctors),
    }


def save_run_snapshot(config: DbConfig, report: dict[str, Any], aggregates: Optional[dict[str, Any]],
                      keep_runs: int = DEFAULT_KEEP_RUNS) -> list[dict[str, Any]]:
    """After a committed load, in a transaction of its own: store the run's report and aggregates,
    keep the snapshots of the last ``keep_runs`` runs only, and return the run history for its trends."""
    connection = connect(config)
    try:
        connection.run("START TRANSACTION")
        # Two runs creating the table at once would collide: a lock of its own (not the load's).
        connection.run("SELECT pg_advisory_xact_lock(:key)", key=SNAPSHOT_LOCK_KEY)
        connection.run(REPORTS_DDL)
        connection.run(_STORE_SNAPSHOT, run_id=report["run_id"], report=json.dumps(report, default=str),
                       aggregates=None if aggregates is None else json.dumps(aggregates))
        prune_snapshots(connection, keep_runs)
        connection.run("COMMIT")
        return trend_runs(connection, source=report.get("source"))
    except Exception:
        rollback_quietly(connection)
        raise
    finally:
        close_quietly(connection)


def record_gated_run(config: DbConfig, run: load.RunRecord, error: str, report: dict[str, Any],
                     rejected: dict[str, Any], source_files: dict[str, str],
                     keep_runs: int = DEFAULT_KEEP_RUNS) -> None:
    """A run the quality gate stopped, in one short transaction that writes the ledger tables only:
    its ``gated`` row (``error``: the gate's reason), its rejected rows and its report snapshot,
    pruned to ``keep_runs`` runs as a load does. It waits for a load in progress (the load lock).
    Raises DatabaseError when PostgreSQL is unreachable or lost, anything else as it is."""
    from . import bulk

    finished_at = datetime.now(timezone.utc)  # the run ends here, whatever it waits for below
    prepared = [load.prepare_rejections(run.run_id, frame, source_files[entity], run.source)
                for entity, frame in rejected.items() if len(frame)]
    connection = connect(config)
    try:
        connection.run("START TRANSACTION")
        # The load's lock (tables created once, etl_rejections not written under a load), then the snapshots'.
        connection.run("SELECT pg_advisory_xact_lock(:key), pg_advisory_xact_lock(:snapshots)",
                       key=load.ADVISORY_LOCK_KEY, snapshots=SNAPSHOT_LOCK_KEY)
        connection.run(LEDGER_DDL)
        load.insert_run(connection, run, "gated", finished_at=finished_at, error=error)
        for data in prepared:
            bulk.send(connection, schema.ETL_REJECTIONS, REJECTION_COLUMNS, data)
        prune_old_runs(connection, schema.ETL_REJECTIONS.qualified, keep_runs)
        connection.run(_STORE_SNAPSHOT, run_id=run.run_id, report=json.dumps(report, default=str), aggregates=None)
        prune_snapshots(connection, keep_runs)
        connection.run("COMMIT")
    except Exception as exc:
        rollback_quietly(connection)
        if load.connection_lost(exc):
            raise DatabaseError(f"lost the connection to PostgreSQL ({_short(exc)})") from exc
        raise
    finally:
        close_quietly(connection)


def prune_snapshots(connection: Any, keep_runs: int) -> None:
    """Delete the snapshots of all but the ``keep_runs`` most recent runs; a failure is rolled back
    to a savepoint and logged (the next run prunes)."""
    connection.run("SAVEPOINT prune_snapshots")
    try:
        prune_old_runs(connection, ETL_RUN_REPORTS.qualified, keep_runs)
    except Exception as exc:
        connection.run("ROLLBACK TO SAVEPOINT prune_snapshots")
        logger.warning("older report snapshots not pruned (the next run tries again): %s", _short(exc))
    else:
        connection.run("RELEASE SAVEPOINT prune_snapshots")


def snapshot_pruned(connection: Any, run: dict[str, Any]) -> bool:
    """Whether a run without a snapshot lost it to pruning: it succeeded or was gated (the runs that
    store one) and a later run still has its snapshot (a snapshot that failed to store reads as pruned too)."""
    if run["status"] not in ("succeeded", "gated") or not _exists(connection, ETL_RUN_REPORTS.qualified):
        return False
    return bool(connection.run(_LATER_SNAPSHOT, run_id=run["run_id"])[0][0])


def get_snapshot(connection: Any, run_id: str) -> Optional[tuple[dict[str, Any], Optional[dict[str, Any]]]]:
    if not _exists(connection, ETL_RUN_REPORTS.qualified):
        return None
    rows = connection.run(_SNAPSHOT, run_id=run_id)
    return (rows[0][0], rows[0][1]) if rows else None


def page_for_run(config: DbConfig, run_id: Optional[str]) -> ReportPage:
    """Everything ``quality_report.html`` shows for a stored run (the latest when None)."""
    connection = connect(config)
    try:
        run = get_run(connection, run_id)
        run_id = run["run_id"]
        notes = [f"Rebuilt from the database on {datetime.now(timezone.utc).isoformat(timespec='seconds')}."]
        snapshot = get_snapshot(connection, run_id)
        total = count_rejected(connection, run_id)
        by_reason = {code: int(count) for code, count in connection.run(_REJECTED_BY_REASON, run_id=run_id)}
        loaded_note = FAILED_NOTE if run["status"] == "failed" else "this run loaded nothing"
        if snapshot is not None:
            report, aggregates = snapshot
            if aggregates is None and run["status"] == "succeeded":
                loaded_note = "another run replaced the loaded data before this run's report was built"
        else:
            report = report_from_ledger(run, by_reason)
            if snapshot_pruned(connection, run):
                notes.append(SNAPSHOT_PRUNED_NOTE)
            else:
                notes.append("This run stored no report snapshot: as-of, readers, unknown status values, ignored "
                             "columns and timings are not known.")
            aggregates = None
            if run["status"] == "succeeded":
                if [row[0] for row in connection.run(_LATEST_SUCCEEDED, source=run["source"])] == [run_id]:
                    aggregates = appointment_aggregates(connection, source=run["source"])
                    aggregates["note"] = "From the tables as they are now (this is the latest loaded run)."
                else:
                    loaded_note = "the loaded tables now hold a later run's data"
        if report.get("load_status") != run["status"] and run["status"] != "running":
            report = {**report, "load_status": run["status"]}
        if run["status"] in NOT_LOADED_STATUSES:  # as the ledger says: nothing of it was loaded
            report = {**report, "counts": counts_not_loaded(report.get("counts"))}
        if run["status"] == "gated":
            fail_on = (report.get("settings") or {}).get("fail_on")
            loaded_note = f"the quality gate{f' (--fail-on {fail_on})' if fail_on else ''} stopped the run before loading"
        rows = rejected_rows(connection, run_id, limit=REJECTED_ROWS_SHOWN)
        if total == 0 and sum((report.get("counts") or {}).get(e, {}).get("rejected", 0) for e in
                              ("doctors", "appointments")):
            notes.append("The rejected rows of this run are no longer in healthtech.etl_rejections (pruned).")
        return ReportPage(
            report=report, rejected_rows=rows, rejected_total=total, aggregates=aggregates,
            trends=trend_runs(connection, until=run["started_at"], source=run.get("source")), notes=notes,
            loaded_note=loaded_note,
            rejections_csv=f"'healthtech-etl rejections --run-id {run_id} --csv'",
            ledger={"started_at": _iso(run["started_at"]), "finished_at": _iso(run["finished_at"]),
                    "status": run["status"], "error": run["error"]},
        )
    finally:
        close_quietly(connection)


def report_from_ledger(run: dict[str, Any], by_reason: dict[str, int]) -> dict[str, Any]:
    """The parts of quality_report.json that ``etl_runs`` holds (for runs without a snapshot)."""
    metrics = run["metrics"] or {}
    return {
        "run_id": run["run_id"], "as_of": None, "generated_at": None, "status": overall_status(metrics),
        "load_status": run["status"], "metrics": metrics, "counts": run["counts"] or {}, "rejections": by_reason,
        "unknown_status_values": {},
        "inputs": {"doctors": {"file": run["doctors_file"], "sha256": run["doctors_sha256"]},
                   "appointments": {"file": run["appointments_file"], "sha256": run["appointments_sha256"]}},
    }


def _iso(value: Any) -> Optional[str]:
    if isinstance(value, (datetime, date)):
        return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value.isoformat()
    return value


def read_trends_quietly(config: DbConfig, source: Optional[str] = None) -> list[dict[str, Any]]:
    """Trends for a run that did not load (quality gate): best effort, read-only."""
    try:  # (the log file only: the gate's one line is what the console says)
        connection = connect(config)
    except DatabaseError as exc:
        logger.warning("HTML report: run history not read: %s", exc, extra={"console": False})
        return []
    try:
        return trend_runs(connection, source=source)
    except Exception as exc:
        logger.warning("HTML report: run history not read: %s", _short(exc), extra={"console": False})
        return []
    finally:
        close_quietly(connection)
