"""Replace mode per source: the load stage alone (load.load_run), 1M appointments, on the bench's
embedded PostgreSQL. Replaces a source's rows when it is alone in the tables (TRUNCATE) and when
another source's 1M rows are beside it (DELETE of its rows, keys and indexes rebuilt).

    .venv/bin/python benchmarks/replace_source.py [--rows 1000000] [--package-dir DIR]

``--package-dir``: import healthtech_etl from there (e.g. an earlier release's src/) for a before/after."""

import argparse
import dataclasses
import datetime as dt
import sys
import time

import numpy as np
import pandas as pd


def frames(rows: int, seed: int) -> tuple:
    generator = np.random.default_rng(seed)
    doctors = pd.DataFrame({"id": np.arange(1, 1001, dtype="int64"), "name": [f"Dr. {i}" for i in range(1000)],
                            "specialty": "Cardiology", "source_row": np.arange(2, 1002)})
    appointments = pd.DataFrame({
        "id": np.arange(1, rows + 1, dtype="int64"), "patient_id": generator.integers(1, 50_000, rows),
        "doctor_id": generator.integers(1, 1001, rows),
        "booking_date": pd.Timestamp("2025-10-01").value // 1000 + generator.integers(0, 86_400_000_000 * 60, rows),
        "status": generator.choice(np.array(["confirmed", "cancelled", "unknown"], dtype=object), rows),
        "source_row": np.arange(2, rows + 2)})
    return doctors, appointments


def replace(config: object, source: str, data: tuple, label: str) -> None:
    from healthtech_etl.load import RunRecord, load_run

    fields = {field.name for field in dataclasses.fields(RunRecord)}
    run = RunRecord(run_id=f"{label}-{time.time_ns()}", started_at=dt.datetime.now(dt.timezone.utc), doctors_file="d",
                    doctors_sha256=label, appointments_file="a", appointments_sha256=str(time.time_ns()), counts={},
                    metrics={}, **({"source": source} if "source" in fields else {}))
    clock = time.perf_counter()
    load_run(config, run, *data, {}, {"doctors": "d", "appointments": "a"})
    print(f"{label:<44} {time.perf_counter() - clock:6.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--package-dir")
    args = parser.parse_args()
    if args.package_dir:
        sys.path.insert(0, args.package_dir)
    from database import reset_tables, start_database

    from healthtech_etl.db import connect
    from healthtech_etl.load import RunRecord

    bench, _ = start_database()
    connection = connect(bench)
    if not connection.run("SELECT 1 FROM pg_database WHERE datname = 'healthtech_replace'"):
        connection.run("CREATE DATABASE healthtech_replace")  # its own: the bench's tables stay as they are
    connection.close()
    config = bench.with_database("healthtech_replace")
    connection = connect(config)
    connection.run("DROP SCHEMA IF EXISTS healthtech CASCADE")  # another release's tables differ
    connection.close()
    reset_tables(config)
    clinic_a, clinic_b = frames(args.rows, 1), frames(args.rows, 2)
    replace(config, "clinic-a", clinic_a, "first load of clinic-a (empty tables)")
    replace(config, "clinic-a", clinic_a, "replace clinic-a, alone (TRUNCATE)")
    replace(config, "clinic-a", clinic_a, "replace clinic-a, alone, again")
    if "source" not in {field.name for field in dataclasses.fields(RunRecord)}:
        return  # a release before sources
    replace(config, "clinic-b", clinic_b, "first load of clinic-b beside clinic-a")
    replace(config, "clinic-a", clinic_a, "replace clinic-a beside clinic-b (DELETE)")
    replace(config, "clinic-a", clinic_a, "replace clinic-a beside clinic-b, again")


if __name__ == "__main__":
    main()
