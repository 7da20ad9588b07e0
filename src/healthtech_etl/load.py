"""Load one run into PostgreSQL atomically: lock, TRUNCATE, COPY, ledger, commit.

Everything happens in one transaction under an advisory lock, so concurrent runs serialise
and a failure at any point leaves the previous data exactly as it was. Data moves with
``COPY ... FROM STDIN`` (CSV); every other statement is parameterised.
"""

import io
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

import pandas as pd

from .clean import ENTITY, REASONS, RECORD_ID
from .db import DbConfig, _short, connect
from .errors import DatabaseError
from .extract import SOURCE_ROW

logger = logging.getLogger(__name__)

SCHEMA = "healthtech"
# Arbitrary constant shared by every healthtech-etl process: "the load lock".
ADVISORY_LOCK_KEY = 7_412_202_511

DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.doctors (
        id bigint PRIMARY KEY,
        name text NOT NULL,
        specialty text
    )""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.appointments (
        id bigint PRIMARY KEY,
        patient_id bigint NOT NULL,
        doctor_id bigint NOT NULL REFERENCES {SCHEMA}.doctors (id),
        booking_date timestamp NOT NULL,
        status text NOT NULL CHECK (status IN ('confirmed', 'cancelled', 'unknown'))
    )""",
    f"CREATE INDEX IF NOT EXISTS appointments_doctor_id_idx ON {SCHEMA}.appointments (doctor_id)",
    f"CREATE INDEX IF NOT EXISTS appointments_patient_id_idx ON {SCHEMA}.appointments (patient_id)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.etl_runs (
        run_id text PRIMARY KEY,
        started_at timestamptz NOT NULL,
        finished_at timestamptz,
        status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        doctors_file text,
        doctors_sha256 text,
        appointments_file text,
        appointments_sha256 text,
        counts jsonb,
        metrics jsonb,
        error text
    )""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.etl_rejections (
        id bigserial PRIMARY KEY,
        run_id text NOT NULL REFERENCES {SCHEMA}.etl_runs (run_id),
        entity text NOT NULL,
        source_file text NOT NULL,
        row_number integer NOT NULL,
        record_id bigint,
        reasons text[] NOT NULL,
        raw jsonb NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS etl_rejections_run_id_idx ON {SCHEMA}.etl_rejections (run_id)",
)


@dataclass
class RunRecord:
    """What the ledger (``etl_runs``) says about one run."""

    run_id: str
    started_at: datetime
    doctors_file: str
    doctors_sha256: str
    appointments_file: str
    appointments_sha256: str
    counts: dict[str, Any]
    metrics: dict[str, Any]


def ensure_schema(connection: Any) -> None:
    """Create the schema objects if missing (call inside the locked transaction)."""
    for statement in DDL:
        connection.run(statement)


def load_run(
    config: DbConfig,
    run: RunRecord,
    doctors: pd.DataFrame,
    appointments: pd.DataFrame,
    rejected: dict[str, pd.DataFrame],
    source_files: dict[str, str],
) -> None:
    """Replace ``doctors`` and ``appointments`` with this run's rows and record the run.

    ``rejected`` and ``source_files``: entity -> the cleaner's rejection frame / the input file
    name. All or nothing."""
    connection = connect(config)
    try:
        connection.run("START TRANSACTION")
        connection.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
        ensure_schema(connection)
        connection.run(
            """INSERT INTO healthtech.etl_runs (run_id, started_at, status, doctors_file, doctors_sha256,
                appointments_file, appointments_sha256, counts, metrics)
                VALUES (:run_id, :started_at, 'running', :doctors_file, :doctors_sha256,
                        :appointments_file, :appointments_sha256, CAST(:counts AS jsonb), CAST(:metrics AS jsonb))""",
            run_id=run.run_id,
            started_at=run.started_at,
            doctors_file=run.doctors_file,
            doctors_sha256=run.doctors_sha256,
            appointments_file=run.appointments_file,
            appointments_sha256=run.appointments_sha256,
            counts=json.dumps(run.counts),
            metrics=json.dumps(run.metrics),
        )
        connection.run(f"TRUNCATE {SCHEMA}.appointments, {SCHEMA}.doctors")
        _copy(connection, f"{SCHEMA}.doctors (id, name, specialty)", doctors[["id", "name", "specialty"]])
        _copy(
            connection,
            f"{SCHEMA}.appointments (id, patient_id, doctor_id, booking_date, status)",
            appointments[["id", "patient_id", "doctor_id", "booking_date", "status"]],
        )
        for entity, frame in rejected.items():
            if len(frame):
                _copy(
                    connection,
                    f"{SCHEMA}.etl_rejections (run_id, entity, source_file, row_number, record_id, reasons, raw)",
                    rejections_for_copy(run.run_id, frame, source_files[entity]),
                )
        connection.run(
            "UPDATE healthtech.etl_runs SET status = 'succeeded', finished_at = :finished WHERE run_id = :run_id",
            finished=datetime.now(timezone.utc),
            run_id=run.run_id,
        )
        connection.run("COMMIT")
    except Exception as exc:
        _rollback(connection)
        if isinstance(exc, DatabaseError):
            raise
        raise DatabaseError(f"load failed and was rolled back, previous data kept: {_short(exc)}") from exc
    finally:
        connection.close()


def record_failed_run(config: DbConfig, run: RunRecord, error: str) -> None:
    """Best effort: write a ``failed`` ledger row after a rolled-back load (own transaction)."""
    try:
        connection = connect(config)
    except DatabaseError:
        return
    try:
        connection.run("START TRANSACTION")
        connection.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
        ensure_schema(connection)
        connection.run(
            """INSERT INTO healthtech.etl_runs (run_id, started_at, finished_at, status, doctors_file,
                doctors_sha256, appointments_file, appointments_sha256, counts, metrics, error)
                VALUES (:run_id, :started_at, :finished_at, 'failed', :doctors_file, :doctors_sha256,
                        :appointments_file, :appointments_sha256, CAST(:counts AS jsonb),
                        CAST(:metrics AS jsonb), :error)
                ON CONFLICT (run_id) DO NOTHING""",
            run_id=run.run_id,
            started_at=run.started_at,
            finished_at=datetime.now(timezone.utc),
            doctors_file=run.doctors_file,
            doctors_sha256=run.doctors_sha256,
            appointments_file=run.appointments_file,
            appointments_sha256=run.appointments_sha256,
            counts=json.dumps(run.counts),
            metrics=json.dumps(run.metrics),
            error=error[:1000],
        )
        connection.run("COMMIT")
    except Exception as exc:  # the ledger must never hide the original failure
        logger.warning("could not record the failed run %s in etl_runs: %s", run.run_id, _short(exc))
        _rollback(connection)
    finally:
        connection.close()


def rejections_for_copy(run_id: str, rejected: pd.DataFrame, source_file: str) -> pd.DataFrame:
    """Rows for ``etl_rejections`` from one entity's rejection frame: reasons as a text[]
    literal, the raw cells (every column the cleaner kept) as one JSON object per row."""
    raw_columns = [c for c in rejected.columns if c not in (ENTITY, SOURCE_ROW, RECORD_ID, REASONS)]
    raw_json = rejected[raw_columns].to_json(orient="records", lines=True, force_ascii=False).splitlines()
    return pd.DataFrame(
        {
            "run_id": run_id,
            "entity": rejected[ENTITY].to_numpy(),
            "source_file": source_file,
            "row_number": rejected[SOURCE_ROW].to_numpy(dtype="int64"),
            "record_id": rejected[RECORD_ID].to_numpy(),
            "reasons": ("{" + rejected[REASONS].str.replace(";", ",", regex=False) + "}").to_numpy(),
            "raw": raw_json,
        }
    )


def _copy(connection: Any, target: str, frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep="", date_format="%Y-%m-%d %H:%M:%S.%f")
    buffer.seek(0)
    connection.run(f"COPY {target} FROM STDIN WITH (FORMAT csv)", stream=buffer)


def _rollback(connection: Optional[Any]) -> None:
    if connection is None:
        return
    try:
        connection.run("ROLLBACK")
    except Exception:  # connection already broken: the server rolls back on disconnect
        pass


def table_counts(config: DbConfig) -> dict[str, int]:
    """Row counts of the loaded tables (for summaries and tests)."""
    connection = connect(config)
    try:
        return {
            "doctors": int(connection.run("SELECT count(*) FROM healthtech.doctors")[0][0]),
            "appointments": int(connection.run("SELECT count(*) FROM healthtech.appointments")[0][0]),
        }
    finally:
        connection.close()

