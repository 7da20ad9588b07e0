"""Helpers for running the real CLI against the session's PostgreSQL."""

from pathlib import Path
from typing import Optional

import pytest
from helpers import DB_ENV_KEYS

from healthtech_etl import cli
from healthtech_etl.db import DbConfig


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_config: DbConfig):
    """Run ``healthtech-etl`` in-process in the test's tmp dir against the test database."""
    monkeypatch.chdir(tmp_path)
    for key in DB_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)

    def run(*args: str, env: Optional[dict[str, str]] = None) -> int:
        monkeypatch.setenv("DATABASE_URL", db_config.url())
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        return cli.main(list(args))

    return run


