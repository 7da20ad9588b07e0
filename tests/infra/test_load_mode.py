"""Context loadMode: the Glue job's default --LOAD_MODE (replace unless the deployer says merge)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Synth, synthesize
from healthtech_infra.config import EtlConfig


@pytest.fixture(scope="module")
def merge_synth(glue_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize({"loadMode": "merge"}, tmp_path_factory.mktemp("cdk-merge"))


def test_load_mode_defaults_to_replace_and_is_validated() -> None:
    assert EtlConfig.from_context({}.get).load_mode == "replace"
    assert EtlConfig.from_context({"loadMode": " Merge "}.get).load_mode == "merge"
    with pytest.raises(ValueError, match="loadMode"):
        EtlConfig.from_context({"loadMode": "upsert"}.get)


def test_context_load_mode_becomes_the_job_default_argument(merge_synth: Synth) -> None:
    _, job = merge_synth.etl_job()
    args = job["Properties"]["DefaultArguments"]
    assert args["--LOAD_MODE"] == "merge"
    assert args["--DB_SSLMODE"] == "verify-full"  # the rest of the contract unchanged
