"""The deployable artefact, installed the way Glue's launcher installs it.

scripts/build-glue.sh builds the wheel; Glue's Python shell launcher installs every
``--extra-py-files`` wheel with ``pip install --target=<dir>`` (no index: the job's subnets
have no route to PyPI) and runs the job script with ``<dir>`` on ``sys.path``
(tests/aws/glue_launcher.py does the same here). The preinstalled libraries of the test's
Python stand in for Glue's analytics set."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from awsenv import REPO

SCRIPT = REPO / "glue_job" / "glue_etl.py"
LAUNCHER = Path(__file__).with_name("glue_launcher.py")
CHECKER = REPO / "scripts" / "check_glue_wheel.py"
WHEEL_NAME = "healthtech_etl-1.0.0-py3-none-any.whl"


def _run(command: list, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def _build(repo: Path, dist: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "DIST_DIR": str(dist)}
    return _run(["bash", str(repo / "scripts" / "build-glue.sh")], cwd=repo, env=env)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Build with the repo's script; a clean environment for the launched jobs (nothing from
    this checkout on PYTHONPATH, no AWS settings), run from a directory outside the repo."""
    root = tmp_path_factory.mktemp("wheel")
    build = _build(REPO, root / "dist")
    assert build.returncode == 0, build.stdout + build.stderr
    clean_env = {key: value for key, value in os.environ.items()
                 if key not in ("PYTHONPATH", "VIRTUAL_ENV") and not key.startswith("AWS_")}
    return type("Built", (), {"root": root, "wheel": root / "dist" / WHEEL_NAME, "staged": root / "dist" / "glue",
                              "build_output": build.stdout, "env": clean_env})


def launch(built: Any, *args: str, env: Any = None) -> subprocess.CompletedProcess:
    """A Glue job run: install the staged wheel offline into a fresh --target dir, run the script."""
    return _run([sys.executable, str(LAUNCHER), "--extra-py-files", str(built.staged / WHEEL_NAME), *args],
                cwd=built.root, env=env or built.env)


def test_wheel_is_staged_with_the_glue_script_and_declares_no_requirements(built: Any) -> None:
    assert sorted(p.name for p in built.staged.iterdir()) == ["glue_etl.py", WHEEL_NAME]
    assert (built.staged / "glue_etl.py").read_bytes() == SCRIPT.read_bytes()
    assert (built.staged / WHEEL_NAME).read_bytes() == built.wheel.read_bytes()
    with zipfile.ZipFile(built.wheel) as wheel:
        metadata = wheel.read("healthtech_etl-1.0.0.dist-info/METADATA").decode()
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [r for r in requires if "extra ==" not in r] == []
    assert sorted(r for r in requires if r.endswith('extra == "runtime"')) == [
        'numpy>=1.22; extra == "runtime"', 'openpyxl>=3.0; extra == "runtime"', 'pandas>=1.4; extra == "runtime"',
        'pg8000>=1.16; extra == "runtime"']
    assert "installs with pip install --no-index --target" in built.build_output


def test_package_and_queries_load_from_the_launcher_s_target_dir(built: Any, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys, healthtech_etl, healthtech_etl.pipeline\n"
        "from healthtech_etl.queries import list_queries, sql_dir\n"
        "print(json.dumps({'package': healthtech_etl.__file__, 'sql_dir': str(sql_dir()), 'path0': sys.path[0],\n"
        "                  'queries': [p.name for p in list_queries()], 'argv': sys.argv[1:]}))\n",
        encoding="utf-8")

    result = launch(built, str(probe), "--JOB_RUN_ID", "jr_1")

    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    target = found["path0"]
    assert Path(target).name.startswith("glue-python-libs-")
    assert found["package"].startswith(target) and found["sql_dir"].startswith(target)
    assert found["queries"] == sorted(p.name for p in (REPO / "sql").glob("*.sql"))
    assert found["argv"] == ["--JOB_RUN_ID", "jr_1"]


def test_glue_script_help_lists_every_argument_and_the_verified_tls_default(built: Any) -> None:
    result = launch(built, str(built.staged / "glue_etl.py"), "--help")

    assert result.returncode == 0, result.stderr
    for name in ("RAW_BUCKET", "DOCTORS_KEY", "APPOINTMENTS_KEY", "DB_SECRET_ARN", "REPORT_BUCKET",
                 "REPORT_PREFIX", "AS_OF", "TRIGGER_KEY", "TRIGGER_VERSION", "DB_SSLMODE", "DB_SSLROOTCERT"):
        assert f"--{name}" in result.stdout
    assert "default verify-full" in " ".join(result.stdout.split())


def test_glue_script_without_arguments_fails_in_one_line(built: Any) -> None:
    result = launch(built, str(built.staged / "glue_etl.py"))

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "healthtech-etl glue job FAILED (exit 2): bad job arguments: the following arguments are required: "
        "--RAW_BUCKET, --DOCTORS_KEY, --APPOINTMENTS_KEY, --DB_SECRET_ARN, --REPORT_BUCKET, --REPORT_PREFIX")
    assert json.loads(result.stdout.splitlines()[-1])["level"] == "ERROR"  # JSON log line too


JOB_ARGS = ["--RAW_BUCKET", "raw", "--DOCTORS_KEY", "raw/doctors.xlsx", "--APPOINTMENTS_KEY", "raw/appointments.xlsx",
            "--DB_SECRET_ARN", "arn:aws:secretsmanager:x", "--REPORT_BUCKET", "reports", "--REPORT_PREFIX", "reports"]


def test_glue_script_refuses_the_default_verify_full_without_a_ca_bundle(built: Any) -> None:
    result = launch(built, str(built.staged / "glue_etl.py"), *JOB_ARGS)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "healthtech-etl glue job FAILED (exit 2): bad job arguments: --DB_SSLMODE verify-full needs a CA bundle: "
        "pass --DB_SSLROOTCERT s3://bucket/key or a local path (or --DB_SSLMODE require, unverified)")


def test_glue_script_reports_unreachable_aws_clearly(built: Any) -> None:
    env = {**built.env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}

    result = launch(built, str(built.staged / "glue_etl.py"), *JOB_ARGS, "--DB_SSLMODE", "require", env=env)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "healthtech-etl glue job FAILED (exit 2): cannot read database secret arn:aws:secretsmanager:x: "
        "EndpointConnectionError")


def _with_requirement(wheel: Path, target: Path, requirement: str) -> Path:
    """A copy of ``wheel`` whose METADATA declares ``requirement`` (RECORD kept consistent)."""
    meta_name = "healthtech_etl-1.0.0.dist-info/METADATA"
    record_name = "healthtech_etl-1.0.0.dist-info/RECORD"
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        metadata = source.read(meta_name).decode()
        head, _, body = metadata.partition("\n\n")
        metadata = (head + f"\nRequires-Dist: {requirement}\n\n" + body).encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(metadata).digest()).rstrip(b"=").decode()
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == meta_name:
                data = metadata
            elif item.filename == record_name:
                lines = [f"{meta_name},sha256={digest},{len(metadata)}" if line.startswith(meta_name + ",") else line
                         for line in data.decode().splitlines()]
                data = ("\n".join(lines) + "\n").encode()
            copy.writestr(item, data)
    return target


def test_a_wheel_with_a_requirement_fails_the_launcher_s_install_and_is_refused(built: Any, tmp_path: Path) -> None:
    import pandas  # noqa: F401 - preinstalled here, as on Glue: --target ignores it all the same

    bad = _with_requirement(built.wheel, tmp_path / WHEEL_NAME, "pandas>=1.4")

    launched = launch(type("Bad", (), {"staged": tmp_path, "root": built.root, "env": built.env}),
                      str(SCRIPT), "--help")
    checked = _run([sys.executable, str(CHECKER), str(bad), str(SCRIPT)], cwd=REPO)

    assert launched.returncode == 1 and "No matching distribution found for pandas" in launched.stderr
    assert checked.returncode == 1
    assert "unconditional Requires-Dist ['pandas>=1.4']" in checked.stderr
    assert "`pip install --no-index --target` fails (as it would on Glue)" in checked.stderr
    assert "No matching distribution found for pandas" in checked.stderr


def test_build_glue_refuses_a_project_that_declares_dependencies(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name in ("src", "sql", "glue_job", "scripts"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copy(REPO / "README.md", repo / "README.md")
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert "dependencies = []\n" in pyproject
    (repo / "pyproject.toml").write_text(pyproject.replace("dependencies = []\n", 'dependencies = ["pandas>=1.4"]\n'),
                                         encoding="utf-8")

    result = _build(repo, repo / "dist")

    assert result.returncode == 1
    assert "build-glue: the wheel is not fit for Glue Python shell 3.9:" in result.stderr
    assert "No matching distribution found for pandas" in result.stderr
    assert not (repo / "dist" / "glue").exists()
