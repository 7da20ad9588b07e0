"""`scripts/cdk.sh synth`: the real, pinned CDK CLI, offline (~10-20 s). Needs npm (skips without it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INFRA, REPO


@pytest.mark.slow
def test_cdk_cli_synth_is_offline_and_matches_the_committed_asl(glue_wheel: Path) -> None:
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the CDK CLI check runs with `make synth`")
    env = {**os.environ, "PY": sys.executable, "AWS_REGION": "", "AWS_PROFILE": "", "AWS_DEFAULT_REGION": ""}
    env = {
        k: v
        for k, v in env.items()
        if v != "" and not k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))
    }
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "cdk.sh"), "synth"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    template = json.loads((INFRA / "cdk.out" / "HealthTechEtl-dev.template.json").read_text())
    from export_asl import ASL_FILE, synthesized_asl

    assert synthesized_asl(template) == json.loads(ASL_FILE.read_text())
    assert "AwsSolutions" not in result.stderr  # cdk-nag: no finding reported


@pytest.mark.slow
def test_cdk_bootstrap_needs_only_credentials_not_the_venv_or_the_wheel(tmp_path: Path) -> None:
    """README step 1 on a fresh checkout: no venv (PY points nowhere), no wheel in dist/. The
    only thing missing must be AWS credentials (none here, and no instance metadata lookup)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: the CDK CLI check runs with `make synth`")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CDK_"))
    }
    env.update(PY=str(tmp_path / "no-venv" / "python"), AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "cdk.sh"), "bootstrap", "aws://123456789012/eu-west-1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no credentials have been configured" in output, output[-3000:]
    assert "make install-dev" not in output and "make build-glue" not in output
