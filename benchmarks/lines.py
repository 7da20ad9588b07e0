"""The benchmark's lines other than ``healthtech-etl etl`` itself, one per child process.

``python benchmarks/lines.py LINE --doctors D.xlsx --appointments A.xlsx --as-of YYYY-MM-DD``
(database from ``DATABASE_URL``) prints one JSON object: per-stage seconds and row counts.
bench.py measures the wall time and peak RSS of the whole process from outside.

- ``seed``: what the original project did - ``pandas.read_excel`` (openpyxl engine), the same
  cleaning, ``DataFrame.to_sql`` through SQLAlchemy, one transaction. Driver: psycopg 3, with
  which SQLAlchemy 2 batches the rows into multi-row INSERTs ("insertmanyvalues"), the
  fastest plain ``to_sql``; without psycopg, pg8000 with ``method="multi"`` (its default would
  be one INSERT per row, ~8x slower: a strawman).
- ``awswrangler``: the same read and cleaning, ``awswrangler.postgresql.to_sql``.
- ``limit``: the floor of any xlsx -> PostgreSQL pipeline here: the fastest xlsx parse of both
  files (fastexcel, all cells as text, nothing converted to Python objects), then a server-side
  ``COPY ... FROM 'file.csv'`` of the already-clean rows (``--csv-dir``), with the same index
  rebuild the project does.
- ``openpyxl-bare``: a bare openpyxl read-only pass over both files (the Glue path's floor).
- ``glue``: ``healthtech-etl etl --reader openpyxl`` as on AWS Glue: pyarrow, fastexcel and
  python-calamine made unimportable first, so every fallback path runs.
"""

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

GLUE_MISSING = ("pyarrow", "fastexcel", "python_calamine")
APPOINTMENT_COLUMNS = ["id", "patient_id", "doctor_id", "booking_date", "status"]
DOCTOR_COLUMNS = ["id", "name", "specialty"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("line", choices=("seed", "awswrangler", "limit", "openpyxl-bare", "glue"))
    parser.add_argument("--doctors", type=Path, required=True)
    parser.add_argument("--appointments", type=Path, required=True)
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--csv-dir", type=Path, help="limit: doctors.csv and appointments.csv to COPY")
    parser.add_argument("--report-dir", type=Path, default=Path("reports"))
    parser.add_argument("--log-dir", type=Path, default=Path("logs"))
    args = parser.parse_args()
    if args.line == "glue":
        return glue(args)
    result = {"seed": seed_style, "awswrangler": awswrangler_style, "limit": limit, "openpyxl-bare": openpyxl_bare}[
        args.line
    ](args)
    print(json.dumps(result))
    return 0


# --- the project on its AWS Glue fallbacks -------------------------------------------------------


def glue(args: argparse.Namespace) -> int:
    for name in GLUE_MISSING:
        sys.modules[name] = None  # type: ignore[assignment]  # "import pyarrow" now raises ImportError
    from healthtech_etl import cli

    return cli.main([
        "etl", "--reader", "openpyxl", "--doctors", str(args.doctors), "--appointments", str(args.appointments),
        "--as-of", args.as_of.isoformat(), "--report-dir", str(args.report_dir), "--log-dir", str(args.log_dir),
    ])


# --- baselines ---------------------------------------------------------------------------------


def read_excel_cells(path: Path, columns: tuple) -> Any:
    """``pandas.read_excel`` (openpyxl) -> the cell-text frame the cleaners take."""
    import pandas as pd

    from healthtech_etl.extract import SOURCE_ROW, cell_text, normalize_header

    frame = pd.read_excel(path, engine="openpyxl", dtype=object, keep_default_na=False, na_values=[])
    frame.columns = [normalize_header(name) for name in frame.columns]
    frame = frame[list(columns)].apply(lambda column: column.map(cell_text)).astype(object)
    frame = frame.where(frame.notna(), None)
    frame[SOURCE_ROW] = range(2, 2 + len(frame))
    return frame[~frame[list(columns)].isna().all(axis=1)].reset_index(drop=True)


def clean_both(doctors_raw: Any, appointments_raw: Any, as_of: date) -> tuple:
    from healthtech_etl import clean

    doctors = clean.clean_doctors(doctors_raw)
    appointments = clean.clean_appointments(appointments_raw, doctors.valid["id"].to_numpy(), as_of=as_of)
    valid = appointments.valid[APPOINTMENT_COLUMNS]
    # The cleaner carries booking_date as int64 microseconds (exact to 9999); to_sql needs datetimes.
    valid = valid.assign(booking_date=__import__("pandas").to_datetime(valid["booking_date"], unit="us"))
    return doctors.valid[DOCTOR_COLUMNS], valid


def read_and_clean(args: argparse.Namespace, timings: dict) -> tuple:
    from healthtech_etl import clean

    clock = time.perf_counter()
    doctors_raw = read_excel_cells(args.doctors, clean.DOCTOR_COLUMNS)
    appointments_raw = read_excel_cells(args.appointments, clean.APPOINTMENT_COLUMNS)
    timings["read"] = time.perf_counter() - clock
    clock = time.perf_counter()
    doctors, appointments = clean_both(doctors_raw, appointments_raw, args.as_of)
    timings["clean"] = time.perf_counter() - clock
    return len(appointments_raw), doctors, appointments


def seed_style(args: argparse.Namespace) -> dict:
    import sqlalchemy

    from healthtech_etl.db import DbConfig

    timings: dict = {}
    read, doctors, appointments = read_and_clean(args, timings)
    clock = time.perf_counter()
    config = DbConfig.from_url(os.environ["DATABASE_URL"])
    try:
        import psycopg  # noqa: F401

        driver, options = "psycopg", {}
        engine = sqlalchemy.create_engine(sqlalchemy.URL.create(
            "postgresql+psycopg", username=config.user, password=config.password, database=config.database,
            query={"host": config.unix_socket_dir, "port": str(config.port)},
        ))
    except ImportError:
        driver, options = "pg8000", {"method": "multi", "chunksize": 1000}
        engine = sqlalchemy.create_engine(
            sqlalchemy.URL.create("postgresql+pg8000", username=config.user, password=config.password,
                                  database=config.database),
            connect_args={"unix_sock": str(Path(config.unix_socket_dir) / f".s.PGSQL.{config.port}")},
        )
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


def limit(args: argparse.Namespace) -> dict:
    import fastexcel

    from healthtech_etl.db import DbConfig, connect
    from healthtech_etl.load import _drop_indexes

    timings: dict = {}
    clock = time.perf_counter()
    read = 0
    for path in (args.doctors, args.appointments):
        batch = fastexcel.read_excel(str(path)).load_sheet(0, header_row=0, dtypes="string", eager=True)
        read = batch.num_rows
        del batch
    timings["read"] = time.perf_counter() - clock
    clock = time.perf_counter()
    connection = connect(DbConfig.from_url(os.environ["DATABASE_URL"]))
    table = "healthtech.appointments"
    try:
        connection.run("START TRANSACTION")
        connection.run("TRUNCATE healthtech.appointments, healthtech.doctors")
        connection.run(f"COPY healthtech.doctors ({', '.join(DOCTOR_COLUMNS)}) FROM "
                       f"'{args.csv_dir / 'doctors.csv'}' WITH (FORMAT csv)")
        # The same index rebuild as the project's load: keys, indexes and foreign key built once.
        rebuild = _drop_indexes(connection, table)
        connection.run(f"COPY {table} ({', '.join(APPOINTMENT_COLUMNS)}) FROM "
                       f"'{args.csv_dir / 'appointments.csv'}' WITH (FORMAT csv)")
        for statement in rebuild:
            connection.run(statement)
        connection.run("COMMIT")
    finally:
        connection.close()
    timings["load"] = time.perf_counter() - clock
    return {"timings": timings, "read": read}


def openpyxl_bare(args: argparse.Namespace) -> dict:
    import openpyxl

    clock = time.perf_counter()
    read = 0
    for path in (args.doctors, args.appointments):
        workbook = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
        read = -1  # header row
        for _ in workbook.worksheets[0].iter_rows(values_only=True):
            read += 1
        workbook.close()
    return {"timings": {"read": time.perf_counter() - clock}, "read": read}


if __name__ == "__main__":
    sys.exit(main())
