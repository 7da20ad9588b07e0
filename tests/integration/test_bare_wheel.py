"""The wheel on its own, without its runtime extra (`pip install dist/healthtech_etl-*.whl`): every
command that needs pandas & co. says what to install in one line (exit 2) instead of ending in a
ModuleNotFoundError traceback. Real: the wheel is built from this tree and installed with
--no-deps into a fresh venv (~20 s)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Not the suite's PYTHONPATH (the compat lane puts the package and its libraries on it).
CLEAN = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "PIP_"))}
EXPECTED = re.compile(r"healthtech-etl: error: the runtime dependencies are not installed \(missing: pandas, numpy, "
                      r"pg8000, python-calamine(, packaging)?\): pip install 'healthtech-etl\[runtime\]'")


@pytest.fixture(scope="module")
def bare_install(tmp_path_factory):
    """A venv holding the project's wheel and nothing else; returns (its bin dir, a work dir)."""
    work = tmp_path_factory.mktemp("bare-wheel")
    source = work / "source"  # a copy: building in the checkout would leave build/ and *.egg-info there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("src", "sql"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(work / "dist"), str(source)], capture_output=True, text=True, timeout=300, env=CLEAN)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (work / "dist").glob("healthtech_etl-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=300, env=CLEAN)
    bin_dir = work / "venv" / "bin"
    installed = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                                str(wheel)], capture_output=True, text=True, timeout=300, env=CLEAN)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return bin_dir, work


def run(bin_dir, work, *args):
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(work), "LANG": "C.UTF-8"}
    return subprocess.run([str(bin_dir / "healthtech-etl"), *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_venv_has_the_wheel_but_not_its_runtime(bare_install):
    bin_dir, work = bare_install
    probe = subprocess.run([str(bin_dir / "python"), "-c", "import healthtech_etl, importlib.util as u; "
                            "print(u.find_spec('pandas') is None, u.find_spec('pg8000') is None)"],
                           cwd=work, env={"PATH": os.environ.get("PATH", "")}, capture_output=True, text=True)
    assert probe.stdout.split() == ["True", "True"], probe.stderr
    assert run(bin_dir, work, "--version").returncode == 0


@pytest.mark.parametrize("args", [["etl"], ["run", "--as-of", "2025-01-01"], ["queries"], ["sample"], ["runs"]])
def test_a_command_without_the_runtime_extra_is_one_line_exit_2(bare_install, args):
    result = run(*bare_install, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and EXPECTED.fullmatch(lines[0]), result.stderr
    assert not (bare_install[1] / "logs").exists() and not (bare_install[1] / "reports").exists()
