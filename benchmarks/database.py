"""The bench's embedded PostgreSQL: start it, reset the tables between runs, checksum what a
run loaded, export the clean rows for the limit line, prepare and check the merge line."""

import atexit
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

from common import AS_OF, CACHE, CLI, DATABASE, ROOT, TIMEOUT
from inputs import previous_month


def start_database() -> tuple:
    from healthtech_etl.db import connect, start_embedded
    from healthtech_etl.embedded import stop_server

    server = start_embedded(CACHE / "pgdata")
    atexit.register(stop_server, CACHE / "pgdata", True)  # a server outlives its process: stopped with the bench
    admin = connect(server)
    try:
        if not admin.run("SELECT 1 FROM pg_database WHERE datname = :name", name=DATABASE):
            admin.run(f"CREATE DATABASE {DATABASE}")
    finally:
        admin.close()
    config = server.with_database(DATABASE)
    url = config.url()
    if config.unix_socket_dir:  # the socket file name carries the port
        url += f"&port={config.port}"
    return config, url


def reset_tables(config: Any) -> None:
    """Empty the project's tables (created by its own DDL first), settle the server."""
    from healthtech_etl.db import connect

    connection = connect(config)
    try:
        connection.run("START TRANSACTION")
        create_schema(connection)
        tables = ", ".join(f"healthtech.{name}" for (name,) in connection.run(
            "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'healthtech' ORDER BY tablename"))
        if tables:
            connection.run(f"TRUNCATE {tables}")
        connection.run("COMMIT")
        # No autovacuum of the previous run's rows and no checkpoint of its WAL inside the next
        # measurement.
        if tables:
            connection.run(f"VACUUM ANALYZE {tables}")
        connection.run("CHECKPOINT")
    finally:
        connection.close()


def create_schema(connection: Any) -> None:
    """The project's DDL; when the package cannot be imported (being rewritten), the tables an
    earlier run created are used as they are, and the runs say whether that works."""
    global _schema_warned
    try:
        from healthtech_etl.history import REPORTS_DDL
        from healthtech_etl.load import ensure_schema
    except ImportError as exc:
        if not _schema_warned:
            print(f"bench: the project's schema DDL cannot be imported ({exc}): tables left as they are",
                  flush=True)
            _schema_warned = True
        return
    ensure_schema(connection)
    connection.run(REPORTS_DDL)


_schema_warned = False


CHECKSUMS = {
    "doctors": "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM healthtech.doctors t",
    "appointments": "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) "
                    "FROM healthtech.appointments t",
    # The raw cells left out: their text depends on the reader for pre-1900 date cells.
    "rejections": "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', entity, source_file, row_number, "
                  "record_id, array_to_string(reasons, ';')), E'\\n' ORDER BY entity, row_number), '')) "
                  "FROM healthtech.etl_rejections",
}


def table_state(config: Any) -> dict:
    from healthtech_etl.db import connect

    connection = connect(config)
    try:
        return {name: dict(zip(("rows", "md5"), connection.run(sql)[0])) for name, sql in CHECKSUMS.items()}
    finally:
        connection.close()


def export_clean_rows(config: Any, folder: Path) -> None:
    """The loaded rows as CSV files the server itself can read (limit line)."""
    from healthtech_etl.db import connect

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    connection = connect(config)
    try:
        for table, columns in (("doctors", "id, name, specialty"),
                               ("appointments", "id, patient_id, doctor_id, booking_date, status")):
            path = folder / f"{table}.csv"
            with path.open("wb") as handle:
                connection.run(f"COPY healthtech.{table} ({columns}) TO STDOUT WITH (FORMAT csv)", stream=handle)
            path.chmod(0o644)
    finally:
        connection.close()


def prefill_previous_month(rows: int, seed: int, doctors: Path, config: Any, url: str, csv_dir: Path) -> None:
    """Load the previous month with an (untimed) merge, export its rows once, settle the server."""
    from healthtech_etl.db import connect

    previous = previous_month(rows, seed, doctors)
    with tempfile.TemporaryDirectory(prefix="bench-prefill-") as work:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "PG"))}
        env.update(DATABASE_URL=url, PYTHONPATH=str(ROOT / "src"))
        subprocess.run([CLI, "etl", "--mode", "merge", "--doctors", str(doctors), "--appointments", str(previous),
                        "--as-of", AS_OF, "--report-dir", str(Path(work) / "reports"), "--log-dir",
                        str(Path(work) / "logs")], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL,
                       timeout=TIMEOUT)
    target = csv_dir / "previous_appointments.csv"
    connection = connect(config)
    try:
        if not target.exists():
            with target.open("wb") as handle:
                connection.run("COPY healthtech.appointments (id, patient_id, doctor_id, booking_date, status) "
                               "TO STDOUT WITH (FORMAT csv)", stream=handle)
            target.chmod(0o644)
        connection.run("VACUUM ANALYZE healthtech.appointments, healthtech.doctors, healthtech.appointment_history")
        connection.run("CHECKPOINT")
    finally:
        connection.close()


MERGE_CHECKS = {
    # The table must hold this month's rows plus the previous month's rows of the other ids.
    "expected": "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM ("
                "SELECT * FROM bench_current UNION ALL SELECT * FROM bench_previous p "
                "WHERE NOT EXISTS (SELECT 1 FROM bench_current c WHERE c.id = p.id)) t",
    "changed": "SELECT count(*) FROM bench_current c JOIN bench_previous p ON p.id = c.id "
               "WHERE (c.*) IS DISTINCT FROM (p.*)",
    "new": "SELECT count(*) FROM bench_current c WHERE NOT EXISTS (SELECT 1 FROM bench_previous p WHERE p.id = c.id)",
    # Every appointment has exactly one open version, equal to it.
    "open_mismatch": "SELECT count(*) FROM healthtech.appointments a FULL JOIN (SELECT * FROM "
                     "healthtech.appointment_history WHERE valid_to IS NULL) h ON h.booking_id = a.id "
                     "WHERE (a.id, a.patient_id, a.doctor_id, a.booking_date, a.status) IS DISTINCT FROM "
                     "(h.booking_id, h.patient_id, h.doctor_id, h.booking_date, h.status)",
    "closed": "SELECT count(*) FROM healthtech.appointment_history WHERE valid_to IS NOT NULL",
}


def verify_merge(rows: int, config: Any, csv_dir: Path, sample: dict, reference: Optional[dict],
                 problems: list) -> dict:
    """The merged tables against the expected union (from both months' exported clean rows),
    the history against the tables, the run's counts against both."""
    from healthtech_etl.db import connect

    connection = connect(config)
    try:
        connection.run("START TRANSACTION")
        for table, name in (("bench_current", "appointments.csv"), ("bench_previous", "previous_appointments.csv")):
            # The CSVs hold the clean rows' columns; the source column takes its default, as the run's rows did.
            connection.run(f"CREATE TEMPORARY TABLE {table} (LIKE healthtech.appointments INCLUDING DEFAULTS)"
                           " ON COMMIT DROP")
            connection.run(f"COPY {table} (id, patient_id, doctor_id, booking_date, status) FROM '{csv_dir / name}'"
                           " WITH (FORMAT csv)")
        found = {name: list(connection.run(sql)[0]) for name, sql in MERGE_CHECKS.items()}
        connection.run("ROLLBACK")
    finally:
        connection.close()
    expected_rows, expected_md5 = found["expected"]
    actual = sample["tables"]["appointments"]
    counts = sample.get("merge", {}).get("appointments", {})
    checks = {
        "appointments equal the expected union": [actual["rows"], actual["md5"]] == [expected_rows, expected_md5],
        "doctors equal the replace run's": reference is None or sample["tables"]["doctors"] == reference["doctors"],
        "history has one open version per appointment, equal to it": found["open_mismatch"] == [0],
        "inserted = new ids": counts.get("inserted") == found["new"][0],
        "updated = changed rows = closed versions": counts.get("updated") == found["changed"][0] == found["closed"][0],
    }
    for check, ok in checks.items():
        if not ok:
            problems.append(f"{rows:,} rows, merge: {check} failed ({found}, {counts}, {actual})")
    return {"checks": checks, "new": found["new"][0], "changed": found["changed"][0], "held": expected_rows}
