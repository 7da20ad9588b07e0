"""`make synth|diff|destroy` and scripts/cdk.sh: the context reaches cdk, and prod is not destroyed by
accident. No AWS and no real CDK CLI: CDK_BIN points at a stand-in that records its arguments, and
make's -o skips the (slow, shared) install-dev and build-glue prerequisites."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PROD = ["-c", "env=prod", "-c", "alertEmail=ops@example.org"]
REFUSAL = "cdk.sh: refusing to destroy the prod stack HealthTechEtl-prod without CONFIRM_PROD=yes"


@pytest.fixture
def fake_cdk(tmp_path: Path) -> Path:
    """A `cdk` that writes its working directory and arguments, one per line, to calls.txt."""
    script = tmp_path / "cdk"
    script.write_text(f'#!/bin/sh\n{{ pwd; for a in "$@"; do echo "$a"; done; }} > {tmp_path / "calls.txt"}\n')
    script.chmod(0o755)
    return script


def calls(fake_cdk: Path) -> list[str] | None:
    record = fake_cdk.parent / "calls.txt"
    return record.read_text().splitlines() if record.exists() else None


def environment(fake_cdk: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CONFIRM_PROD")}
    env.pop("PY", None)  # the Makefile's own PY is relative; cdk.sh defaults to the repo's .venv
    return {**env, "CDK_BIN": str(fake_cdk), **extra}


def make(target: str, fake_cdk: Path, *variables: str, **extra: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("scripts/cdk.sh runs the app with the repository's .venv, which is missing")
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "install-dev", "-o", "build-glue", target, *variables],
        cwd=REPO, env=environment(fake_cdk, **extra), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def cdk_sh(fake_cdk: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "cdk.sh"), *args],
        cwd=REPO, env=environment(fake_cdk, PY=sys.executable, **extra), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    "variables",
    [
        ["CONTEXT=-c env=prod -c alertEmail=ops@example.org"],
        ["CONTEXT=--context=env=PROD"],
        ["CONTEXT=-c env=dev -c env=prod", "CONFIRM_PROD=no"],
    ],
)
def test_make_destroy_refuses_prod_with_one_line_before_cdk_runs(fake_cdk: Path, variables: list[str]) -> None:
    result = make("destroy", fake_cdk, *variables)
    assert result.returncode == 2
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(ours) == 1 and ours[0].startswith(REFUSAL), result.stderr
    assert calls(fake_cdk) is None  # cdk never ran


def test_cdk_sh_destroy_refuses_prod_on_its_own_too(fake_cdk: Path) -> None:
    result = cdk_sh(fake_cdk, "destroy", *PROD)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(REFUSAL)
    assert calls(fake_cdk) is None


def test_make_destroy_of_prod_with_the_flag_passes_the_context(fake_cdk: Path, glue_wheel: Path) -> None:
    result = make("destroy", fake_cdk, "CONTEXT=" + " ".join(PROD), "CONFIRM_PROD=yes")
    assert result.returncode == 0, result.stderr
    cwd, *args = calls(fake_cdk) or ["", ""]
    assert Path(cwd) == REPO / "infra"
    assert args[0] == "destroy" and args[-4:] == PROD
    assert "--app" in args


def test_make_destroy_of_dev_needs_no_flag(fake_cdk: Path, glue_wheel: Path) -> None:
    result = make("destroy", fake_cdk)
    assert result.returncode == 0, result.stderr
    assert (calls(fake_cdk) or [""])[1] == "destroy"


@pytest.mark.parametrize("target", ["diff", "synth"])
def test_make_diff_and_synth_pass_the_context(fake_cdk: Path, glue_wheel: Path, target: str) -> None:
    result = make(target, fake_cdk, "CONTEXT=" + " ".join(PROD))
    assert result.returncode == 0, result.stderr
    _, *args = calls(fake_cdk) or ["", ""]
    assert args[0] == target and args[-4:] == PROD
    app = args[args.index("--app") + 1]
    assert app == f"{REPO / '.venv' / 'bin' / 'python'} app.py"
