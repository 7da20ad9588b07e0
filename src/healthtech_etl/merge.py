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
from .load import SCHEMA, _copy

logger = logging.getLogger(__name__)

DOCTOR_COLUMNS = ("id", "name", "specialty")
APPOINTMENT_COLUMNS = ("id", "patient_id", "doctor_id", "booking_date", "status")
_APPOINTMENT_VALUES = APPOINTMENT_COLUMNS[1:]
_STAGE_DOCTORS = "healthtech_stage_doctors"
_STAGE_APPOINTMENTS = "healthtech_stage_appointments"
_CHANGED = "healthtech_changed_appointments"


def loaded_doctor_ids(config: DbConfig) -> np.ndarray:
    """Ids of the doctors already in the database (none before the first load), read-only."""
    connection = connect(config)
    try:
        connection.run("START TRANSACTION READ ONLY")
        exists = connection.run(f"SELECT to_regclass('{SCHEMA}.doctors') IS NOT NULL")[0][0]
        rows = connection.run(f"SELECT id FROM {SCHEMA}.doctors") if exists else []
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
    connection.run(
        f"UPDATE {SCHEMA}.etl_runs SET counts = coalesce(counts, '{{}}'::jsonb) || CAST(:merge AS jsonb)"
        " WHERE run_id = :run_id",
        merge=json.dumps({"merge": counts}),
        run_id=run_id,
    )
    logger.info(
        "merge: doctors %s, appointments %s, history %s",
        _describe(counts["doctors"]), _describe(counts["appointments"]), _describe(counts["history"]),
    )
    return counts


def _sync_history_after_replace(connection: Any, run_id: str, loaded_at: Any) -> Optional[dict[str, Any]]:
    """If the tables were last written by a replace run (or by no run), record their contents
    in the history as of that run; None when the last load was a merge (history in line)."""
    last = connection.run(
        f"SELECT run_id, mode, finished_at FROM {SCHEMA}.etl_runs"
        " WHERE status = 'succeeded' AND run_id <> :run_id ORDER BY finished_at DESC NULLS LAST LIMIT 1",
        run_id=run_id,
    )
    if last and last[0][1] == "merge":
        return None
    source_run, at = (last[0][0], last[0][2] or loaded_at) if last else (run_id, loaded_at)
    same = " AND ".join(f"a.{column} = h.{column}" for column in _APPOINTMENT_VALUES)
    closed = connection.run(
        f"""WITH closed AS (
            UPDATE {SCHEMA}.appointment_history h SET valid_to = greatest(h.valid_from, CAST(:at AS timestamptz))
            WHERE h.valid_to IS NULL
              AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.appointments a WHERE a.id = h.booking_id AND {same})
            RETURNING 1)
        SELECT count(*) FROM closed""",
        at=at,
    )[0][0]
    columns = ", ".join(APPOINTMENT_COLUMNS)
    opened = connection.run(
        f"""WITH opened AS (
            INSERT INTO {SCHEMA}.appointment_history
                (booking_id, {', '.join(_APPOINTMENT_VALUES)}, valid_from, valid_to, run_id)
            SELECT {columns}, CAST(:at AS timestamptz), NULL, :source_run FROM {SCHEMA}.appointments a
            WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.appointment_history h
                              WHERE h.booking_id = a.id AND h.valid_to IS NULL)
            RETURNING 1)
        SELECT count(*) FROM opened""",
        at=at,
        source_run=source_run,
    )[0][0]
    return {"as_of_run": source_run, "closed": int(closed), "opened": int(opened)}


def _upsert_doctors(connection: Any, doctors: pd.DataFrame) -> dict[str, int]:
    columns = ", ".join(DOCTOR_COLUMNS)
    connection.run(
        f"CREATE TEMPORARY TABLE {_STAGE_DOCTORS} (id bigint, name text, specialty text) ON COMMIT DROP"
    )
    _copy(connection, f"{_STAGE_DOCTORS} ({columns})", doctors[list(DOCTOR_COLUMNS)])
    inserted, updated = connection.run(
        f"""WITH written AS (
            INSERT INTO {SCHEMA}.doctors AS t ({columns}) SELECT {columns} FROM {_STAGE_DOCTORS}
            ON CONFLICT (id) DO UPDATE SET name = excluded.name, specialty = excluded.specialty
            WHERE (t.name, t.specialty) IS DISTINCT FROM (excluded.name, excluded.specialty)
            RETURNING xmax = 0 AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"""
    )[0]
    return _split(len(doctors), inserted, updated)


def _upsert_appointments(
    connection: Any, run_id: str, loaded_at: Any, appointments: pd.DataFrame
) -> tuple[dict[str, int], dict[str, int]]:
    columns = ", ".join(APPOINTMENT_COLUMNS)
    values = ", ".join(_APPOINTMENT_VALUES)
    typed = "id bigint, patient_id bigint, doctor_id bigint, booking_date timestamp, status text"
    connection.run(f"CREATE TEMPORARY TABLE {_STAGE_APPOINTMENTS} ({typed}) ON COMMIT DROP")
    connection.run(f"CREATE TEMPORARY TABLE {_CHANGED} ({typed}, inserted boolean) ON COMMIT DROP")
    _copy(connection, f"{_STAGE_APPOINTMENTS} ({columns})", appointments[list(APPOINTMENT_COLUMNS)])
    # The rows the upsert wrote (inserted or changed) - the unchanged ones are neither written
    # nor returned. xmax = 0 on a returned row means it was inserted, not updated.
    connection.run(
        f"""WITH written AS (
            INSERT INTO {SCHEMA}.appointments AS t ({columns}) SELECT {columns} FROM {_STAGE_APPOINTMENTS}
            ON CONFLICT (id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _APPOINTMENT_VALUES)}
            WHERE ({', '.join(f't.{c}' for c in _APPOINTMENT_VALUES)})
                  IS DISTINCT FROM ({', '.join(f'excluded.{c}' for c in _APPOINTMENT_VALUES)})
            RETURNING {', '.join(f't.{c}' for c in APPOINTMENT_COLUMNS)}, t.xmax = 0)
        INSERT INTO {_CHANGED} SELECT * FROM written"""
    )
    closed = connection.run(
        f"""WITH closed AS (
            UPDATE {SCHEMA}.appointment_history h SET valid_to = CAST(:at AS timestamptz)
            FROM {_CHANGED} c WHERE h.booking_id = c.id AND h.valid_to IS NULL
            RETURNING 1)
        SELECT count(*) FROM closed""",
        at=loaded_at,
    )[0][0]
    opened = connection.run(
        f"""WITH opened AS (
            INSERT INTO {SCHEMA}.appointment_history (booking_id, {values}, valid_from, valid_to, run_id)
            SELECT {columns}, CAST(:at AS timestamptz), NULL, :run_id FROM {_CHANGED}
            RETURNING 1)
        SELECT count(*) FROM opened""",
        at=loaded_at,
        run_id=run_id,
    )[0][0]
    inserted, updated = connection.run(
        f"SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM {_CHANGED}"
    )[0]
    return _split(len(appointments), inserted, updated), {"closed": int(closed), "opened": int(opened)}


def _split(rows: int, inserted: int, updated: int) -> dict[str, int]:
    return {"inserted": int(inserted), "updated": int(updated), "unchanged": rows - int(inserted) - int(updated)}


def _describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in counts.items())
