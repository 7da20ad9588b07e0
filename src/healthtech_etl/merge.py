"""Merge mode: upsert this run's rows by id and keep every version of each appointment.

``load.load_run`` calls :func:`merge_tables` inside its transaction, under its advisory lock,
instead of TRUNCATE + COPY. Set-based, whatever the size:

1. the rows are copied (binary ``COPY``, load.py's helpers) into temporary tables;
2. ``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE (row differs)`` upserts doctors and then
   appointments: new ids are inserted, changed rows updated, unchanged rows not written at all,
   ids absent from the file kept;
3. the appointments the upsert wrote (``RETURNING``, into a temporary table) close their open
   version in ``appointment_history`` (``valid_to`` = this load's time) and open a new one.

History across a replace: replace runs write no history, so the first merge after a replace
first brings the history in line with the replaced contents, as of that replace (its
``finished_at`` and ``run_id``): open versions that no longer match the table are closed, and
every appointment without an open version gets one. A merge after a merge skips this step.
"""

import json
import logging
from typing import Any, Optional

import numpy as np
import pandas as pd

from .db import DbConfig, _short, connect
from .errors import DatabaseError
from .load import _REBUILD_MIN_ROWS, SCHEMA, _copy, _drop_indexes, column_types

logger = logging.getLogger(__name__)

DOCTOR_COLUMNS = ("id", "name", "specialty")
APPOINTMENT_COLUMNS = ("id", "patient_id", "doctor_id", "booking_date", "status")

# The statements, written out in full (no identifiers assembled at run time). Temporary tables
# live in the session's own schema and vanish at COMMIT or ROLLBACK.
_STAGE_DOCTORS = "CREATE TEMPORARY TABLE merge_doctors (id bigint, name text, specialty text) ON COMMIT DROP"
_STAGE_APPOINTMENTS = """CREATE TEMPORARY TABLE merge_appointments
    (id bigint, patient_id bigint, doctor_id bigint, booking_date timestamp, status text) ON COMMIT DROP"""
_WRITTEN_APPOINTMENTS = """CREATE TEMPORARY TABLE merge_written
    (id bigint, patient_id bigint, doctor_id bigint, booking_date timestamp, status text, inserted boolean)
    ON COMMIT DROP"""
# xmax = 0 on a row RETURNING gives back means the upsert inserted it (an update sets xmax).
_UPSERT_DOCTORS = """WITH written AS (
        INSERT INTO healthtech.doctors AS t (id, name, specialty)
        SELECT id, name, specialty FROM merge_doctors
        ON CONFLICT (id) DO UPDATE SET name = excluded.name, specialty = excluded.specialty
        WHERE (t.name, t.specialty) IS DISTINCT FROM (excluded.name, excluded.specialty)
        RETURNING t.xmax = 0 AS inserted)
    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"""
# Unchanged rows are neither written nor returned; the written ones are kept for the history.
_UPSERT_APPOINTMENTS = """WITH written AS (
        INSERT INTO healthtech.appointments AS t (id, patient_id, doctor_id, booking_date, status)
        SELECT id, patient_id, doctor_id, booking_date, status FROM merge_appointments
        ON CONFLICT (id) DO UPDATE SET patient_id = excluded.patient_id, doctor_id = excluded.doctor_id,
            booking_date = excluded.booking_date, status = excluded.status
        WHERE (t.patient_id, t.doctor_id, t.booking_date, t.status)
              IS DISTINCT FROM (excluded.patient_id, excluded.doctor_id, excluded.booking_date, excluded.status)
        RETURNING t.id, t.patient_id, t.doctor_id, t.booking_date, t.status, t.xmax = 0)
    INSERT INTO merge_written SELECT * FROM written"""
_WRITTEN_COUNTS = "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merge_written"
# Only updated rows have an open version to close (a new id has none: a version left open for
# an id the table lacks would make the insert below fail on appointment_history_open_idx).
_CLOSE_WRITTEN = """WITH closed AS (
        UPDATE healthtech.appointment_history h SET valid_to = CAST(:at AS timestamptz)
        FROM merge_written w WHERE NOT w.inserted AND h.booking_id = w.id AND h.valid_to IS NULL
        RETURNING 1)
    SELECT count(*) FROM closed"""
_OPEN_WRITTEN = """WITH opened AS (
        INSERT INTO healthtech.appointment_history
            (booking_id, patient_id, doctor_id, booking_date, status, valid_from, valid_to, run_id)
        SELECT id, patient_id, doctor_id, booking_date, status, CAST(:at AS timestamptz), NULL, :run_id
        FROM merge_written
        RETURNING 1)
    SELECT count(*) FROM opened"""
_LAST_LOAD = """SELECT run_id, mode, finished_at FROM healthtech.etl_runs
    WHERE status = 'succeeded' AND run_id <> :run_id ORDER BY finished_at DESC NULLS LAST LIMIT 1"""
# After a replace: close the open versions the table no longer holds, open one for every
# appointment without one.
_CLOSE_REPLACED = """WITH closed AS (
        UPDATE healthtech.appointment_history h SET valid_to = greatest(h.valid_from, CAST(:at AS timestamptz))
        WHERE h.valid_to IS NULL AND NOT EXISTS (
            SELECT 1 FROM healthtech.appointments a
            WHERE a.id = h.booking_id AND a.patient_id = h.patient_id AND a.doctor_id = h.doctor_id
              AND a.booking_date = h.booking_date AND a.status = h.status)
        RETURNING 1)
    SELECT count(*) FROM closed"""
_OPEN_REPLACED = """WITH opened AS (
        INSERT INTO healthtech.appointment_history
            (booking_id, patient_id, doctor_id, booking_date, status, valid_from, valid_to, run_id)
        SELECT id, patient_id, doctor_id, booking_date, status, CAST(:at AS timestamptz), NULL, :source_run
        FROM healthtech.appointments a
        WHERE NOT EXISTS (SELECT 1 FROM healthtech.appointment_history h
                          WHERE h.booking_id = a.id AND h.valid_to IS NULL)
        RETURNING 1)
    SELECT count(*) FROM opened"""
_RECORD_COUNTS = """UPDATE healthtech.etl_runs SET counts = coalesce(counts, CAST('{}' AS jsonb)) || CAST(:merge AS jsonb)
    WHERE run_id = :run_id"""
_LOADED_DOCTORS = "SELECT id FROM healthtech.doctors"


def loaded_doctor_ids(config: DbConfig) -> np.ndarray:
    """Ids of the doctors already in the database (none before the first load), read-only."""
    connection = connect(config)
    try:
        connection.run("START TRANSACTION READ ONLY")
        exists = connection.run("SELECT to_regclass('healthtech.doctors') IS NOT NULL")[0][0]
        rows = connection.run(_LOADED_DOCTORS) if exists else []
        connection.run("COMMIT")
    except Exception as exc:
        raise DatabaseError(f"cannot read the doctors already loaded: {_short(exc)}") from exc
    finally:
        connection.close()
    return np.array([row[0] for row in rows], dtype="int64")


def merge_tables(
    connection: Any, run_id: str, doctors: pd.DataFrame, appointments: pd.DataFrame
) -> dict[str, Any]:
    """Merge the run's valid rows in (see the module docstring); returns what changed, also
    added to the run's ``etl_runs.counts`` under ``"merge"``. Needs the caller's transaction."""
    # One time for the whole run, taken after the lock: serialised runs get increasing times.
    loaded_at = connection.run("SELECT clock_timestamp()")[0][0]
    counts: dict[str, Any] = {"loaded_at": loaded_at.isoformat()}
    counts["history_sync"] = _sync_history_after_replace(connection, run_id, loaded_at)
    counts["doctors"] = _upsert_doctors(connection, doctors)
    counts["appointments"], counts["history"] = _upsert_appointments(connection, run_id, loaded_at, appointments)
    connection.run(_RECORD_COUNTS, merge=json.dumps({"merge": counts}), run_id=run_id)
    logger.info(
        "merge: doctors %s; appointments %s; history %s",
        _describe(counts["doctors"]), _describe(counts["appointments"]), _describe(counts["history"]),
    )
    return counts


def _sync_history_after_replace(connection: Any, run_id: str, loaded_at: Any) -> Optional[dict[str, Any]]:
    """If the tables were last written by a replace run (or by no run), record their contents
    in the history as of that run; None when the last load was a merge (history in line)."""
    last = connection.run(_LAST_LOAD, run_id=run_id)
    if last and last[0][1] == "merge":
        return None
    source_run, at = (last[0][0], last[0][2] or loaded_at) if last else (run_id, loaded_at)
    closed = connection.run(_CLOSE_REPLACED, at=at)[0][0]
    opened = connection.run(_OPEN_REPLACED, at=at, source_run=source_run)[0][0]
    return {"as_of_run": source_run, "closed": int(closed), "opened": int(opened)}


def _upsert_doctors(connection: Any, doctors: pd.DataFrame) -> dict[str, int]:
    connection.run(_STAGE_DOCTORS)
    _copy(connection, "merge_doctors (id, name, specialty)", doctors[list(DOCTOR_COLUMNS)],
          types=column_types(f"{SCHEMA}.doctors ({', '.join(DOCTOR_COLUMNS)})"))
    inserted, updated = connection.run(_UPSERT_DOCTORS)[0]
    return _split(len(doctors), inserted, updated)


def _upsert_appointments(
    connection: Any, run_id: str, loaded_at: Any, appointments: pd.DataFrame
) -> tuple[dict[str, int], dict[str, int]]:
    connection.run(_STAGE_APPOINTMENTS)
    connection.run(_WRITTEN_APPOINTMENTS)
    _copy(connection, "merge_appointments (id, patient_id, doctor_id, booking_date, status)",
          appointments[list(APPOINTMENT_COLUMNS)],
          types=column_types(f"{SCHEMA}.appointments ({', '.join(APPOINTMENT_COLUMNS)})"))
    # A large upsert maintains the foreign key (one trigger call per inserted row) and the plain
    # indexes row by row; dropping them and rebuilding once afterwards was ~1.4x faster at 200k
    # rows. The key stays (the upsert's arbiter). Like replace's TRUNCATE, this keeps readers out
    # until COMMIT.
    rebuild = _drop_indexes(connection, "healthtech.appointments", keep_keys=True) \
        if len(appointments) >= _REBUILD_MIN_ROWS else []
    connection.run(_UPSERT_APPOINTMENTS)
    for statement in rebuild:
        connection.run(statement)
    closed = connection.run(_CLOSE_WRITTEN, at=loaded_at)[0][0]
    opened = connection.run(_OPEN_WRITTEN, at=loaded_at, run_id=run_id)[0][0]
    inserted, updated = connection.run(_WRITTEN_COUNTS)[0]
    return _split(len(appointments), inserted, updated), {"closed": int(closed), "opened": int(opened)}


def _split(rows: int, inserted: int, updated: int) -> dict[str, int]:
    return {"inserted": int(inserted), "updated": int(updated), "unchanged": rows - int(inserted) - int(updated)}


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in counts.items())
