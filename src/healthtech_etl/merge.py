"""Merge mode: upsert this run's rows by (source, id) (unchanged rows are not written, absent ids
kept) and keep every version of each appointment in ``appointment_history``, per source. Replace runs
write no history, so the first merge after one brings the source's history in line with the table as
of that replace. Referential integrity is judged again under the load lock (:func:`recheck_doctors`)."""

import json
import logging
from typing import Any, Optional

import numpy as np
import pandas as pd

from . import bulk
from .db import DbConfig, _short, close_quietly, connect
from .errors import DatabaseError
from .exports import DEFAULT_SOURCE
from .schema import (
    APPOINTMENTS,
    DOCTORS,
    ENTITY,
    REASONS,
    RECORD_ID,
    SOURCE_ROW,
    UNKNOWN_DOCTOR,
    Column,
    Table,
    sql,
    staging_table,
)

logger = logging.getLogger(__name__)

# Temporary tables live in the session's own schema and vanish at COMMIT or ROLLBACK.
STAGED = {DOCTORS.name: "merge_doctors", APPOINTMENTS.name: "merge_appointments"}
_WRITTEN = "merge_written"  # the appointments the upsert wrote, and whether it inserted them
_STAGE_WRITTEN = staging_table(APPOINTMENTS, _WRITTEN, extra=(Column("inserted", "boolean", null=True),))

# An appointment's columns and its version's, in the same order (booking_id <- id).
_VERSIONED = APPOINTMENTS.names
_VERSION = tuple("booking_id" if name == "id" else name for name in _VERSIONED)
_FRAGMENTS = {
    "written": _WRITTEN,
    "history_columns": ", ".join(_VERSION + ("valid_from", "valid_to", "run_id")),
    "appointment_columns": ", ".join(_VERSIONED),
    "returned": ", ".join(f"t.{name}" for name in _VERSIONED),
    "booking": "booking_id",
    "same_version": " AND ".join(f"a.{a} = h.{h}" for a, h in zip(_VERSIONED, _VERSION)),
}


def _upsert(table: Table) -> str:
    """Insert the staged rows of ``table``, update those that differ (RETURNING follows)."""
    values = [name for name in table.names if name not in table.key]
    return sql(
        "INSERT INTO {table} AS t ({columns}) SELECT {columns} FROM {staged}"
        " ON CONFLICT ({key}) DO UPDATE SET {updates} WHERE ({old}) IS DISTINCT FROM ({new})",
        table=table.qualified, columns=", ".join(table.names), staged=STAGED[table.name], key=", ".join(table.key),
        updates=", ".join(f"{name} = excluded.{name}" for name in values),
        old=", ".join(f"t.{name}" for name in values), new=", ".join(f"excluded.{name}" for name in values),
    )


# xmax = 0 on a row RETURNING gives back means the upsert inserted it (an update sets xmax).
_UPSERT_DOCTORS = sql("""WITH written AS ({upsert} RETURNING t.xmax = 0 AS inserted)
    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written""",
                      upsert=_upsert(DOCTORS))
# Unchanged rows are neither written nor returned; the written ones are kept for the history.
_UPSERT_APPOINTMENTS = sql("""WITH written AS ({upsert} RETURNING {returned}, t.xmax = 0)
    INSERT INTO {written} SELECT * FROM written""", upsert=_upsert(APPOINTMENTS), **_FRAGMENTS)
_WRITTEN_COUNTS = sql("SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM {written}",
                      **_FRAGMENTS)
# Only updated rows have an open version to close.
_CLOSE_WRITTEN = sql("""WITH closed AS (
        UPDATE {appointment_history} h SET valid_to = CAST(:at AS timestamptz)
        FROM {written} w WHERE NOT w.inserted AND h.source = w.source AND h.{booking} = w.id AND h.valid_to IS NULL
        RETURNING 1)
    SELECT count(*) FROM closed""", **_FRAGMENTS)
_OPEN_WRITTEN = sql("""WITH opened AS (
        INSERT INTO {appointment_history} ({history_columns})
        SELECT {appointment_columns}, CAST(:at AS timestamptz), NULL, :run_id FROM {written}
        RETURNING 1)
    SELECT count(*) FROM opened""", **_FRAGMENTS)
_LAST_LOAD = sql("""SELECT run_id, mode, finished_at FROM {etl_runs}
    WHERE status = 'succeeded' AND run_id <> :run_id AND source = :source ORDER BY finished_at DESC NULLS LAST LIMIT 1""")
# After a replace: close the open versions the table lacks, open one where there is none.
_CLOSE_REPLACED = sql("""WITH closed AS (
        UPDATE {appointment_history} h SET valid_to = greatest(h.valid_from, CAST(:at AS timestamptz))
        WHERE h.valid_to IS NULL AND h.source = :source AND NOT EXISTS (SELECT 1 FROM {appointments} a WHERE {same_version})
        RETURNING 1)
    SELECT count(*) FROM closed""", **_FRAGMENTS)
_OPEN_REPLACED = sql("""WITH opened AS (
        INSERT INTO {appointment_history} ({history_columns})
        SELECT {appointment_columns}, CAST(:at AS timestamptz), NULL, :source_run FROM {appointments} a
        WHERE a.source = :source AND NOT EXISTS (SELECT 1 FROM {appointment_history} h
                                                 WHERE h.source = a.source AND h.{booking} = a.id AND h.valid_to IS NULL)
        RETURNING 1)
    SELECT count(*) FROM opened""", **_FRAGMENTS)
_RECORD_COUNTS = sql("""UPDATE {etl_runs} SET counts = coalesce(counts, CAST('{{}}' AS jsonb)) || CAST(:merge AS jsonb)
    WHERE run_id = :run_id""")
_SOURCE_DOCTORS = sql("SELECT id FROM {doctors} WHERE source = :source")
_COLUMNS = "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(:name) AND attnum > 0 AND NOT attisdropped"


def loaded_doctor_ids(config: DbConfig, source: str) -> np.ndarray:
    """Ids of the source's doctors already in the database (none before the first load), read-only;
    a table of a release before sources (upgraded by this run's load) holds the default source's."""
    connection = connect(config)
    try:
        connection.run("START TRANSACTION READ ONLY")
        columns = {row[0] for row in connection.run(_COLUMNS, name=DOCTORS.qualified)}
        if "source" not in columns:
            rows = connection.run(sql("SELECT id FROM {doctors}")) if columns and source == DEFAULT_SOURCE else []
        else:
            rows = connection.run(_SOURCE_DOCTORS, source=source)
        connection.run("COMMIT")
    except Exception as exc:
        raise DatabaseError(f"cannot read the doctors already loaded: {_short(exc)}") from exc
    finally:
        close_quietly(connection)
    return np.array([row[0] for row in rows], dtype="int64")


def recheck_doctors(connection: Any, run: Any, doctors: pd.DataFrame,
                    appointments: pd.DataFrame) -> tuple[pd.DataFrame, Optional[pd.DataFrame]]:
    """Under the load lock: the appointments whose doctor is neither in the file nor, now, in the
    source's table (a run queued before may have removed it) leave the load as ``unknown_doctor``
    rejections. Returns the appointments to load and those rejections (None if none); the run's
    counts and its referential_integrity metric (``rejected_after_lock``) say so."""
    known = np.union1d(doctors["id"].to_numpy(), np.array([row[0] for row in connection.run(
        _SOURCE_DOCTORS, source=run.source)], dtype="int64"))
    gone = ~np.isin(appointments["doctor_id"].to_numpy(), known)
    late = int(gone.sum())
    if not late:
        return appointments, None
    rows = appointments[gone]
    logger.warning("%s appointments rejected under the load lock: their doctor is no longer loaded for source %s "
                   "(unknown_doctor), e.g. row %s", f"{late:,}", run.source, int(rows[SOURCE_ROW].iloc[0]))
    counts = (run.counts or {}).get("appointments")
    if isinstance(counts, dict):
        counts.update(loaded=int(counts.get("loaded", 0)) - late, rejected=int(counts.get("rejected", 0)) + late,
                      rejected_after_lock=late)
    if isinstance((run.metrics or {}).get("referential_integrity"), dict):
        run.metrics["referential_integrity"]["rejected_after_lock"] = late
    rejected = pd.DataFrame({
        ENTITY: "appointments", SOURCE_ROW: rows[SOURCE_ROW].to_numpy(), RECORD_ID: rows["id"].to_numpy(),
        REASONS: UNKNOWN_DOCTOR, "booking_id": rows["id"].to_numpy(), "patient_id": rows["patient_id"].to_numpy(),
        "doctor_id": rows["doctor_id"].to_numpy(),
        "booking_date": pd.to_datetime(rows["booking_date"].to_numpy(), unit="us").astype(str),
        "status": rows["status"].to_numpy()})
    return appointments[~gone], rejected


def merge_tables(connection: Any, run: Any, doctors: pd.DataFrame,
                 appointments: pd.DataFrame) -> dict[str, Any]:
    """Merge the run's rows (of ``run.source``) in; returns what changed, also added to ``etl_runs.counts``."""
    run_id = run.run_id
    # One time for the whole run, taken after the lock: serialised runs get increasing times.
    loaded_at = connection.run("SELECT clock_timestamp()")[0][0]
    counts: dict[str, Any] = {"loaded_at": loaded_at.isoformat()}
    counts["history_sync"] = _sync_history_after_replace(connection, run_id, run.source, loaded_at)
    counts["doctors"] = _upsert_doctors(connection, doctors)
    counts["appointments"], counts["history"] = _upsert_appointments(connection, run_id, loaded_at, appointments)
    connection.run(_RECORD_COUNTS, merge=json.dumps({"merge": counts}), run_id=run_id)
    logger.info("merge: doctors %s; appointments %s; history %s",
                _describe(counts["doctors"]), _describe(counts["appointments"]), _describe(counts["history"]))
    return counts


def _sync_history_after_replace(connection: Any, run_id: str, source: str, loaded_at: Any) -> Optional[dict[str, Any]]:
    """After a replace run of the source (or none), record its rows in the history as of it; None after a merge."""
    last = connection.run(_LAST_LOAD, run_id=run_id, source=source)
    if last and last[0][1] == "merge":
        return None
    source_run, at = (last[0][0], last[0][2] or loaded_at) if last else (run_id, loaded_at)
    closed = connection.run(_CLOSE_REPLACED, at=at, source=source)[0][0]
    opened = connection.run(_OPEN_REPLACED, at=at, source_run=source_run, source=source)[0][0]
    return {"as_of_run": source_run, "closed": int(closed), "opened": int(opened)}


def _stage(connection: Any, table: Table, frame: pd.DataFrame) -> None:
    connection.run(staging_table(table, STAGED[table.name]))
    bulk.copy_frame(connection, table, frame[list(table.names)], into=STAGED[table.name])


def _upsert_doctors(connection: Any, doctors: pd.DataFrame) -> dict[str, int]:
    _stage(connection, DOCTORS, doctors)
    inserted, updated = connection.run(_UPSERT_DOCTORS)[0]
    return _split(len(doctors), inserted, updated)


def _upsert_appointments(connection: Any, run_id: str, loaded_at: Any,
                         appointments: pd.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    _stage(connection, APPOINTMENTS, appointments)
    connection.run(_STAGE_WRITTEN)
    # Rebuilding the foreign key and indexes (not the key) once was ~1.4x faster at 200k rows.
    with bulk.rebuilt_indexes(connection, APPOINTMENTS, len(appointments), keep_keys=True):
        connection.run(_UPSERT_APPOINTMENTS)
    closed = connection.run(_CLOSE_WRITTEN, at=loaded_at)[0][0]
    opened = connection.run(_OPEN_WRITTEN, at=loaded_at, run_id=run_id)[0][0]
    inserted, updated = connection.run(_WRITTEN_COUNTS)[0]
    return _split(len(appointments), inserted, updated), {"closed": int(closed), "opened": int(opened)}


def _split(rows: int, inserted: int, updated: int) -> dict[str, int]:
    return {"inserted": int(inserted), "updated": int(updated), "unchanged": rows - int(inserted) - int(updated)}


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in counts.items())
