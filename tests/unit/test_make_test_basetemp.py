"""`make test*` gives pytest a temporary root of its own (--basetemp in a fresh mktemp dir): two
suites on one machine never share /tmp/pytest-of-<user> (another user's copy of it is "permission
denied"). The Makefile recipe runs for real, with a stand-in pytest in a stand-in venv."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKE_PYTEST = """#!/bin/sh
for arg in "$@"; do case "$arg" in --basetemp=*) base="${arg#--basetemp=}";; esac; done
test -n "$base" && test -d "$base" && touch "$base/used" || exit 9
echo "$base" >> "$RECORD"
exit "${FAKE_RC:-0}"
"""


@pytest.fixture
def fake_venv(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    pytest_script = venv / "bin" / "pytest"
    pytest_script.write_text(FAKE_PYTEST)
    pytest_script.chmod(0o755)
    future = time.time() + 3600  # the install stamps newer than every requirements file: nothing to install
    for stamp in (".stamp-run", ".stamp-dev"):
        (venv / stamp).touch()
        os.utime(venv / stamp, (future, future))
    return venv


def run_target(target, venv, tmp_path, rc=0):
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "RECORD": str(tmp_path / "record"), "FAKE_RC": str(rc)}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), target, f"VENV={venv}"], env=env,
                          capture_output=True, text=True, timeout=60)


def test_each_run_gets_its_own_basetemp_removed_after_success(fake_venv, tmp_path):
    for target in ("test-unit", "test-integration", "test-unit"):
        result = run_target(target, fake_venv, tmp_path)
        assert result.returncode == 0, result.stderr
    used = (tmp_path / "record").read_text().split()
    assert len(used) == 3 and len(set(used)) == 3
    assert all(path.startswith(str(tmp_path / "tmp") + "/") for path in used)
    assert not list((tmp_path / "tmp").iterdir())  # removed after each passing run


def test_a_failing_run_keeps_its_files_and_fails(fake_venv, tmp_path):
    result = run_target("test-unit", fake_venv, tmp_path, rc=1)
    assert result.returncode != 0
    kept = Path((tmp_path / "record").read_text().strip())
    assert (kept / "used").exists()


def test_every_pytest_line_of_the_makefile_has_its_own_basetemp():
    lines = [line for line in (ROOT / "Makefile").read_text().splitlines() if "bin/pytest" in line]
    assert len(lines) >= 5
    for line in lines:
        assert re.search(r't=\$\$\(mktemp -d [^)]*\) && .*--basetemp="\$\$t" .* && rm -rf "\$\$t"$', line), line
