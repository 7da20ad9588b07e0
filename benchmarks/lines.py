"""The benchmark's lines other than ``healthtech-etl etl`` itself, one per child process.

``python benchmarks/lines.py LINE --doctors D.xlsx --appointments A.xlsx --as-of YYYY-MM-DD``
(database from ``DATABASE_URL``) prints one JSON object: per-stage seconds and row counts.
bench.py measures the wall time and peak RSS of the whole process from outside.

- ``seed``: what the original project did - ``pandas.read_excel`` (openpyxl engine), the same
  cleaning, ``DataFrame.to_sql`` through SQLAlchemy, one transaction. Driver: psycopg 3, with
  which SQLAlchemy 2 batches the rows into multi-row INSERTs ("insertmanyvalues"), the
  fastest plain ``to_sql``; without psycopg, pg8000 with ``method="multi"`` (its default would
  be one INSERT per row, ~8x slower: a strawman). Title rows: ``--header-row``, as a script
  written for that export would know them.
- ``awswrangler``: the same read and cleaning, ``awswrangler.postgresql.to_sql``.
- ``limit``: the floor of any xlsx -> PostgreSQL pipeline on the project's one reader: a bare
  python-calamine parse of both sheets (``to_python``, nothing converted further), then a
  server-side ``COPY ... FROM 'file.csv'`` of the already-clean rows (``--csv-dir``), with the
  keys and indexes dropped and rebuilt once, as the project's load does.
- ``calamine-bare``: the bare python-calamine read alone,
  ``CalamineWorkbook.from_path(p).get_sheet_by_name(name).to_python()`` of both sheets: what the
  project's read stage is measured against.
"""

import argparse
import datetime as dt
import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any, Optional

APPOINTMENT_COLUMNS = ["id", "patient_id", "doctor_id", "booking_date", "status"]
DOCTOR_COLUMNS = ["id", "name", "specialty"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("line", choices=("seed", "awswrangler", "limit", "calamine-bare"))
    parser.add_argument("--doctors", type=Path, required=True)
    parser.add_argument("--appointments", type=Path, required=True)
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--header-row", type=int, default=0, help="0-based row of the header (both files)")
    parser.add_argument("--csv-dir", type=Path, help="limit: doctors.csv and appointments.csv to COPY")
    args = parser.parse_args()
    line = {"seed": seed_style, "awswrangler": awswrangler_style, "limit": limit, "calamine-bare": calamine_bare}
    print(json.dumps(line[args.line](args)))
    return 0


# --- baselines ---------------------------------------------------------------------------------


def cell_text(value: Any) -> Optional[str]:
    """A cell as the text the project's cleaner takes (its reader's rendering)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S") if value.year >= 1000 else value.isoformat(" ")
        micros = value.microsecond
        if not micros:
            return text
        return f"{text}.{micros // 1000:03d}" if micros % 1000 == 0 else f"{text}.{micros:06d}"
    if isinstance(value, dt.date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d} 00:00:00"
    return str(value)


def read_excel_cells(path: Path, columns: tuple, header_row: int) -> Any:
    """``pandas.read_excel`` (openpyxl) -> the cell-text frame the cleaners take."""
    import pandas as pd

    from healthtech_etl import clean

    source_row = getattr(clean, "SOURCE_ROW", "source_row")
    frame = pd.read_excel(path, engine="openpyxl", skiprows=header_row, dtype=object, keep_default_na=False,
                          na_values=[])
    frame.columns = [" ".join(str(name).split()).replace(" ", "_").lower() for name in frame.columns]
    frame = frame[list(columns)].apply(lambda column: column.map(cell_text)).astype(object)
    frame = frame.where(frame.notna(), None)
    frame[source_row] = range(header_row + 2, header_row + 2 + len(frame))
    return frame[~frame[list(columns)].isna().all(axis=1)].reset_index(drop=True)


def clean_both(doctors_raw: Any, appointments_raw: Any, as_of: date) -> tuple:
    import pandas as pd

    from healthtech_etl import clean

    doctors = clean.clean_doctors(doctors_raw)
    appointments = clean.clean_appointments(appointments_raw, doctors.valid["id"].to_numpy(), as_of=as_of)
    valid = appointments.valid[APPOINTMENT_COLUMNS]
    # The cleaner carries booking_date as int64 microseconds (exact to 9999); to_sql needs datetimes.
    if valid["booking_date"].dtype.kind in "iu":
        valid = valid.assign(booking_date=pd.to_datetime(valid["booking_date"], unit="us"))
    return doctors.valid[DOCTOR_COLUMNS], valid


def read_and_clean(args: argparse.Namespace, timings: dict) -> tuple:
    from healthtech_etl import clean

    clock = time.perf_counter()
    doctors_raw = read_excel_cells(args.doctors, clean.DOCTOR_COLUMNS, args.header_row)
    appointments_raw = read_excel_cells(args.appointments, clean.APPOINTMENT_COLUMNS, args.header_row)
    timings["read"] = time.perf_counter() - clock
    clock = time.perf_counter()
    doctors, appointments = clean_both(doctors_raw, appointments_raw, args.as_of)
    timings["clean"] = time.perf_counter() - clock
    return len(appointments_raw), doctors, appointments


def _engine() -> tuple:
    """SQLAlchemy engine, driver name, to_sql options (psycopg 3 if installed, else pg8000)."""
    import sqlalchemy

    from healthtech_etl.db import DbConfig

    config = DbConfig.from_url(os.environ["DATABASE_URL"])
    try:
        import psycopg  # noqa: F401

        return sqlalchemy.create_engine(sqlalchemy.URL.create(
            "postgresql+psycopg", username=config.user, password=config.password, database=config.database,
            query={"host": config.unix_socket_dir, "port": str(config.port)},
        )), "psycopg", {}
    except ImportError:
        return sqlalchemy.create_engine(
            sqlalchemy.URL.create("postgresql+pg8000", username=config.user, password=config.password,
                                  database=config.database),
            connect_args={"unix_sock": str(Path(config.unix_socket_dir) / f".s.PGSQL.{config.port}")},
        ), "pg8000", {"method": "multi", "chunksize": 1000}


def seed_style(args: argparse.Namespace) -> dict:
    import sqlalchemy

    timings: dict = {}
    read, doctors, appointments = read_and_clean(args, timings)
    clock = time.perf_counter()
    engine, driver, options = _engine()
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("TRUNCATE healthtech.appointments, healthtech.doctors"))
        doctors.to_sql("doctors", connection, schema="healthtech", if_exists="append", index=False, **options)
        appointments.to_sql("appointments", connection, schema="healthtech", if_exists="append", index=False,
                            **options)
    engine.dispose()
    timings["load"] = time.perf_counter() - clock
    return {"timings": timings, "read": read, "driver": driver,
            "loaded": {"doctors": len(doctors), "appointments": len(appointments)}}


def awswrangler_style(args: argparse.Namespace) -> dict:
    import awswrangler as wr
    import pg8000

    from healthtech_etl.db import DbConfig

    timings: dict = {}
    read, doctors, appointments = read_and_clean(args, timings)
    clock = time.perf_counter()
    config = DbConfig.from_url(os.environ["DATABASE_URL"])
    connection = pg8000.connect(user=config.user, password=config.password, database=config.database,
                                unix_sock=str(Path(config.unix_socket_dir) / f".s.PGSQL.{config.port}"))
    try:
        connection.cursor().execute("TRUNCATE healthtech.appointments, healthtech.doctors")
        wr.postgresql.to_sql(doctors, connection, table="doctors", schema="healthtech", mode="append", index=False,
                             use_column_names=True)
        wr.postgresql.to_sql(appointments, connection, table="appointments", schema="healthtech", mode="append",
                             index=False, use_column_names=True)
        connection.commit()
    finally:
        connection.close()
    timings["load"] = time.perf_counter() - clock
    return {"timings": timings, "read": read, "loaded": {"doctors": len(doctors), "appointments": len(appointments)}}


# --- floors ------------------------------------------------------------------------------------


def calamine_read(args: argparse.Namespace, timings: dict) -> int:
    """The bare python-calamine read of both sheets (the first sheet of each file, by name);
    the appointments' data rows (below the header)."""
    from python_calamine import CalamineWorkbook

    read = 0
    timings["read"] = 0.0
    for entity, path in (("doctors", args.doctors), ("appointments", args.appointments)):
        clock = time.perf_counter()
        workbook = CalamineWorkbook.from_path(str(path))
        rows = workbook.get_sheet_by_name(workbook.sheet_names[0]).to_python()
        seconds = time.perf_counter() - clock
        timings[f"read_{entity}"] = seconds
        timings["read"] += seconds
        read = len(rows) - args.header_row - 1
        del rows, workbook  # (freed outside the clock)
    return read


def calamine_bare(args: argparse.Namespace) -> dict:
    timings: dict = {}
    read = calamine_read(args, timings)
    return {"timings": timings, "read": read}


def drop_keys_and_indexes(connection: Any, table: str) -> list:
    """Drop ``table``'s keys, foreign keys and indexes; the statements that recreate them
    (keys, indexes, then foreign keys), as the project's load rebuilds them after a large COPY."""
    keys = connection.run(
        "SELECT quote_ident(conname), pg_get_constraintdef(oid), contype = 'f' FROM pg_constraint "
        "WHERE conrelid = CAST(:table AS regclass) AND contype IN ('p', 'u', 'x', 'f') "
        "ORDER BY contype = 'f' DESC, conname", table=table)
    indexes = connection.run(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_indexdef(c.oid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE i.indrelid = CAST(:table AS regclass) AND NOT EXISTS (SELECT 1 FROM pg_constraint k "
        "WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid) ORDER BY c.relname", table=table)
    for name, _, _ in keys:  # foreign keys first
        connection.run(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    for name, _ in indexes:
        connection.run(f"DROP INDEX {name}")
    add = [(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}", foreign) for name, definition, foreign in keys]
    return ([statement for statement, foreign in add if not foreign] + [definition for _, definition in indexes]
            + [statement for statement, foreign in add if foreign])


def limit(args: argparse.Namespace) -> dict:
    from healthtech_etl.db import DbConfig, connect

    timings: dict = {}
    read = calamine_read(args, timings)
    clock = time.perf_counter()
    connection = connect(DbConfig.from_url(os.environ["DATABASE_URL"]))
    table = "healthtech.appointments"
    try:
        connection.run("START TRANSACTION")
        connection.run("TRUNCATE healthtech.appointments, healthtech.doctors")
        connection.run(f"COPY healthtech.doctors ({', '.join(DOCTOR_COLUMNS)}) FROM "
                       f"'{args.csv_dir / 'doctors.csv'}' WITH (FORMAT csv)")
        rebuild = drop_keys_and_indexes(connection, table)
        connection.run(f"COPY {table} ({', '.join(APPOINTMENT_COLUMNS)}) FROM "
                       f"'{args.csv_dir / 'appointments.csv'}' WITH (FORMAT csv)")
        for statement in rebuild:
            connection.run(statement)
        connection.run("COMMIT")
    finally:
        connection.close()
    timings["load"] = time.perf_counter() - clock
    return {"timings": timings, "read": read}


if __name__ == "__main__":
    sys.exit(main())
