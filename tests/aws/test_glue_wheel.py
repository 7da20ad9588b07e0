"""The deployable artefact: scripts/build-glue.sh builds a wheel that installs into a fresh
virtualenv with only its declared dependencies (+ boto3, which Glue provides), and the Glue
script runs from there, importing the package and its SQL from the installed wheel."""

import json
import os
import subprocess
import sys
import zipfile
from typing import Any

import pytest
from awsenv import REPO

SCRIPT = REPO / "glue_job" / "glue_etl.py"


def _run(command: list, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Build with the repo's script, then install the wheel into a brand-new venv (no
    --system-site-packages): pip resolves the wheel's own Requires-Dist, pinned by the lock."""
    root = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "PYTHON": sys.executable, "DIST_DIR": str(root / "dist")}
    build = _run(["bash", str(REPO / "scripts" / "build-glue.sh")], cwd=REPO, env=env)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (root / "dist").glob("healthtech_etl-*-py3-none-any.whl")
    venv = root / "venv"
    created = _run([sys.executable, "-m", "venv", str(venv)])
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    pip = _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                "-c", str(REPO / "requirements" / "lock.txt"), str(wheel), "boto3"])
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # A clean environment: nothing from this checkout or the dev venv on the path.
    clean_env = {key: value for key, value in os.environ.items()
                 if key not in ("PYTHONPATH", "VIRTUAL_ENV") and not key.startswith("AWS_")}
    return type("Installed", (), {"root": root, "wheel": wheel, "python": python, "venv": venv,
                                  "staged": root / "dist" / "glue", "env": clean_env})


def test_wheel_is_staged_with_the_glue_script(installed: Any) -> None:
    assert installed.wheel.name == "healthtech_etl-1.0.0-py3-none-any.whl"
    assert sorted(p.name for p in installed.staged.iterdir()) == ["glue_etl.py", installed.wheel.name]
    assert (installed.staged / "glue_etl.py").read_bytes() == SCRIPT.read_bytes()
    with zipfile.ZipFile(installed.wheel) as wheel:
        metadata = wheel.read("healthtech_etl-1.0.0.dist-info/METADATA").decode()
    requires = sorted(line.split(": ", 1)[1] for line in metadata.splitlines()
                      if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert requires == ["numpy>=1.22", "openpyxl>=3.0", "pandas>=1.4", "pg8000>=1.16"]


def test_package_and_queries_load_from_the_installed_wheel(installed: Any) -> None:
    code = (
        "import json, healthtech_etl, healthtech_etl.pipeline, healthtech_etl.sql\n"
        "from healthtech_etl.queries import list_queries, sql_dir\n"
        "print(json.dumps({'package': healthtech_etl.__file__, 'sql_dir': str(sql_dir()),\n"
        "                  'queries': [p.name for p in list_queries()]}))\n"
    )
    result = _run([str(installed.python), "-c", code], cwd=installed.root, env=installed.env)

    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    site = str(installed.venv / "lib")
    assert found["package"].startswith(site) and found["sql_dir"].startswith(site)
    assert found["queries"] == sorted(p.name for p in (REPO / "sql").glob("*.sql"))


def test_glue_script_help_lists_every_argument(installed: Any) -> None:
    result = _run([str(installed.python), str(SCRIPT), "--help"], cwd=installed.root, env=installed.env)

    assert result.returncode == 0, result.stderr
    for name in ("RAW_BUCKET", "DOCTORS_KEY", "APPOINTMENTS_KEY", "DB_SECRET_ARN", "REPORT_BUCKET",
                 "REPORT_PREFIX", "AS_OF", "TRIGGER_KEY", "TRIGGER_VERSION", "DB_SSLMODE", "DB_SSLROOTCERT"):
        assert f"--{name}" in result.stdout


def test_glue_script_without_arguments_fails_in_one_line(installed: Any) -> None:
    result = _run([str(installed.python), str(SCRIPT)], cwd=installed.root, env=installed.env)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "healthtech-etl glue job FAILED (exit 2): bad job arguments: the following arguments are required: "
        "--RAW_BUCKET, --DOCTORS_KEY, --APPOINTMENTS_KEY, --DB_SECRET_ARN, --REPORT_BUCKET, --REPORT_PREFIX")
    assert json.loads(result.stdout.splitlines()[-1])["level"] == "ERROR"  # JSON log line too


def test_glue_script_reports_unreachable_aws_clearly(installed: Any) -> None:
    env = {**installed.env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}
    argv = [str(installed.python), str(SCRIPT), "--RAW_BUCKET", "raw", "--DOCTORS_KEY", "raw/doctors.xlsx",
            "--APPOINTMENTS_KEY", "raw/appointments.xlsx", "--DB_SECRET_ARN", "arn:aws:secretsmanager:x",
            "--REPORT_BUCKET", "reports", "--REPORT_PREFIX", "reports"]

    result = _run(argv, cwd=installed.root, env=env)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "healthtech-etl glue job FAILED (exit 2): cannot read database secret arn:aws:secretsmanager:x: "
        "EndpointConnectionError")
