"""Set-up tells the truth: `make up/down` without Docker and `make install` on an old Python say
what is wrong in one line. Docker's absence is real (a PATH without it); a Docker without the
Compose plugin or without a running engine is a tiny shell script answering like docker does."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("make", "bash", "sh", "grep", "awk", "test")


def tool_dir(tmp_path: Path, docker_script: str = "") -> Path:
    """A PATH holding only the basic tools make needs (and a docker answering as scripted)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in NEEDED:
        found = shutil.which(name)
        if found:
            (bin_dir / name).symlink_to(found)
    if docker_script:
        docker = bin_dir / "docker"
        docker.write_text("#!/bin/sh\n" + docker_script)
        docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def make(target: str, path: Path, **variables: str) -> subprocess.CompletedProcess:
    args = ["make", "--no-print-directory", "-C", str(ROOT), target] + [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(args, env={**os.environ, "PATH": str(path)}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target", ["up", "down"])
@pytest.mark.parametrize("docker, expected", [
    ("", "make: Docker is not installed - install Docker Engine with the Compose plugin"),
    ('[ "$1" = compose ] && exit 1; exit 0\n', "make: the Docker Compose plugin is missing"),
    ('[ "$1" = info ] && exit 1; exit 0\n', "make: the Docker engine is not running or not accessible"),
])
def test_missing_docker_is_one_line(target, docker, expected, tmp_path):
    result = make(target, tool_dir(tmp_path, docker))
    assert result.returncode == 2
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(expected), result.stderr
    assert "'make run'" in first


def test_an_old_python_is_refused_with_what_to_do(tmp_path):
    old = next((p for p in Path(os.path.expanduser("~/.pyenv/versions")).glob("3.9*/bin/python3.9")), None)
    if old is None:
        pytest.skip("no Python 3.9 on this machine")
    result = make("check-python", tool_dir(tmp_path), PYTHON_BOOT=str(old))
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[0]
    assert "is Python 3.9" in line and "need 3.11 or newer" in line and "PYTHON_BOOT=python3.12" in line


def test_a_missing_python_is_named(tmp_path):
    result = make("check-python", tool_dir(tmp_path), PYTHON_BOOT="no-such-python")
    assert result.returncode == 2
    assert result.stderr.startswith("make: no-such-python not found or not runnable")
