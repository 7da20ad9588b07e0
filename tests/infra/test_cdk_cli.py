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
    template = json.loads((INFRA / "cdk.out" / "HealthTechEtlStack.template.json").read_text())
    from export_asl import ASL_FILE, synthesized_asl

    assert synthesized_asl(template) == json.loads(ASL_FILE.read_text())
    assert "AwsSolutions" not in result.stderr  # cdk-nag: no finding reported
