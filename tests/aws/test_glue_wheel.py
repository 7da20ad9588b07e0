"""The deployable artefacts, installed the way Glue's launcher installs them.

scripts/build-glue.sh builds the wheel and stages it with the job's library wheels
(glue_job/requirements.txt: packaging, python-calamine); Glue's Python shell launcher installs
every ``--extra-py-files`` wheel on its own with ``pip install --target=<dir>`` (no index: the
job's subnets have no route to PyPI) and runs the job script with ``<dir>`` on ``sys.path``
(tests/aws/glue_launcher.py does the same here). The preinstalled libraries of the test's Python
stand in for Glue's analytics set. The staged python-calamine is CPython 3.9 x86_64 Linux: only a
Python like Glue's (the compat lane) installs it; elsewhere the venv's own python-calamine serves."""

import base64
import hashlib
import importlib.util
import json
import os
import platform
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
CACHE = REPO / "dist" / "wheel-cache"
GLUE_LIKE = (sys.version_info[:2] == (3, 9) and sys.implementation.name == "cpython"
             and platform.system() == "Linux" and platform.machine() == "x86_64")


def _load(name: str, path: Path) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


glue_wheels = _load("glue_wheels", REPO / "glue_job" / "glue_wheels.py")
checker = _load("check_glue_wheel", CHECKER)
PINS = glue_wheels.read_pins()


def _run(command: list, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)


def _build(repo: Path, dist: Path) -> subprocess.CompletedProcess:
    # One download cache for every build (copies of the repository included): offline after the first.
    env = {**os.environ, "PYTHON": sys.executable, "DIST_DIR": str(dist), "GLUE_WHEEL_CACHE": str(CACHE)}
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
    staged = root / "dist" / "glue"
    return type("Built", (), {"root": root, "wheel": root / "dist" / WHEEL_NAME, "staged": staged,
                              "libraries": glue_wheels.staged(staged), "build_output": build.stdout,
                              "env": clean_env})


def launch(built: Any, *args: str, env: Any = None) -> subprocess.CompletedProcess:
    """A Glue job run: install the staged wheels offline into a fresh --target dir, run the script.
    The library wheels only on a Python like Glue's (the venv's python-calamine serves elsewhere)."""
    wheels = [*(built.libraries if GLUE_LIKE else []), built.staged / WHEEL_NAME]
    return _run([sys.executable, str(LAUNCHER), "--extra-py-files", ",".join(str(w) for w in wheels), *args],
                cwd=built.root, env=env or built.env)


def _zip_contents(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_wheels_are_staged_with_the_glue_script_and_declare_no_requirements(built: Any) -> None:
    libraries = [path.name for path in built.libraries]
    assert sorted(p.name for p in built.staged.iterdir()) == sorted(["glue_etl.py", WHEEL_NAME, *libraries])
    assert (built.staged / "glue_etl.py").read_bytes() == SCRIPT.read_bytes()
    assert (built.staged / WHEEL_NAME).read_bytes() == built.wheel.read_bytes()
    for wheel in [built.wheel, *built.libraries]:
        with zipfile.ZipFile(wheel) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = archive.read(meta).decode()
        requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
        assert [r for r in requires if "extra ==" not in r] == [], wheel.name
    assert "installs with pip install --no-index --target" in built.build_output


def test_library_wheels_are_the_pins_of_make_run_verified_against_pypi_s_sha256(built: Any) -> None:
    run_pins = checker._pinned(REPO / "requirements" / "run.txt")
    assert [pin.name for pin in PINS] == ["packaging", "python-calamine"]  # dependencies first
    for pin, staged in zip(PINS, built.libraries):
        assert run_pins[pin.name] == pin.version  # one version for `make run` and the Glue job
        assert staged.name.startswith(pin.prefix)
        original = glue_wheels.cached(pin, CACHE)
        assert original is not None and hashlib.sha256(original.read_bytes()).hexdigest() == pin.sha256
        assert original.name.endswith(("-py3-none-any.whl", "-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"))


def test_the_staged_python_calamine_is_pypi_s_without_its_requirement(built: Any) -> None:
    pin = next(pin for pin in PINS if pin.name == "python-calamine")
    staged = next(path for path in built.libraries if path.name.startswith(pin.prefix))
    assert staged.name == "python_calamine-0.4.0-1glue-cp39-cp39-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    ours, pypi = _zip_contents(staged), _zip_contents(glue_wheels.cached(pin, CACHE))
    dist_info = "python_calamine-0.4.0.dist-info"
    assert list(ours) == list(pypi)
    changed = sorted(name for name in ours if ours[name] != pypi[name])
    assert changed == [f"{dist_info}/METADATA", f"{dist_info}/RECORD", f"{dist_info}/WHEEL"]
    assert set(pypi[f"{dist_info}/METADATA"].decode().splitlines()) - set(ours[f"{dist_info}/METADATA"].decode().splitlines()) \
        == {"Requires-Dist: packaging>=23.1"}
    assert ours[f"{dist_info}/WHEEL"].decode().splitlines()[-1] == "Build: 1glue"
    record = {row.split(",")[0]: row.split(",")[1] for row in ours[f"{dist_info}/RECORD"].decode().splitlines()}
    for name, data in ours.items():
        if name != f"{dist_info}/RECORD":
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert record[name] == f"sha256={digest}", name


def test_each_staged_wheel_installs_on_its_own_offline_as_glue_s_launcher_installs_it(built: Any) -> None:
    """One `pip install --no-index --target` per wheel, into one directory (CPython 3.9 when there is
    one, else pip's cp39 manylinux emulation): PyPI's python-calamine alone would need the index."""
    problems, how = checker.launcher_install_problems([*built.libraries, built.wheel])
    assert problems == [], how

    pypi_calamine = glue_wheels.cached(PINS[1], CACHE)
    problems, _ = checker.launcher_install_problems([built.libraries[0], pypi_calamine, built.wheel])
    assert len(problems) == 1 and "No matching distribution found for packaging>=23.1" in problems[0]


def test_a_cached_wheel_with_another_sha256_is_not_used(tmp_path: Path) -> None:
    pin = PINS[0]
    tampered = tmp_path / glue_wheels.cached(pin, CACHE).name
    data = bytearray(glue_wheels.cached(pin, CACHE).read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    assert glue_wheels.cached(pin, tmp_path) is None
    with pytest.raises(glue_wheels.WheelError, match="expected one python_calamine-0.4.0-"):
        glue_wheels.staged(tmp_path)


def test_package_and_queries_load_from_the_launcher_s_target_dir(built: Any, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys, healthtech_etl, healthtech_etl.pipeline, packaging, python_calamine\n"
        "from healthtech_etl.queries import list_queries, sql_dir\n"
        "print(json.dumps({'package': healthtech_etl.__file__, 'sql_dir': str(sql_dir()), 'path0': sys.path[0],\n"
        "                  'queries': [p.name for p in list_queries()], 'argv': sys.argv[1:],\n"
        "                  'python_calamine': python_calamine.__file__, 'packaging': packaging.__file__}))\n",
        encoding="utf-8")

    result = launch(built, str(probe), "--JOB_RUN_ID", "jr_1")

    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    target = found["path0"]
    assert Path(target).name.startswith("glue-python-libs-")
    assert found["package"].startswith(target) and found["sql_dir"].startswith(target)
    assert found["queries"] == sorted(p.name for p in (REPO / "sql").glob("*.sql"))
    assert found["argv"] == ["--JOB_RUN_ID", "jr_1"]
    if GLUE_LIKE:  # the reader and its dependency from the staged wheels, as on Glue
        assert found["python_calamine"].startswith(target) and found["packaging"].startswith(target)


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

    launched = launch(type("Bad", (), {"staged": tmp_path, "root": built.root, "env": built.env,
                                       "libraries": built.libraries}),
                      str(SCRIPT), "--help")
    checked = _run([sys.executable, str(CHECKER), str(bad), str(SCRIPT)], cwd=REPO)

    assert launched.returncode == 1 and "No matching distribution found for pandas" in launched.stderr
    assert checked.returncode == 1
    assert "unconditional Requires-Dist ['pandas>=1.4']" in checked.stderr
    assert "`pip install --no-index --target` fails (as it would on Glue)" in checked.stderr
    assert "No matching distribution found for pandas" in checked.stderr


def _repo_copy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for name in ("src", "sql", "glue_job", "scripts", "requirements"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copy(REPO / "README.md", repo / "README.md")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    return repo


def test_build_glue_refuses_a_project_that_declares_dependencies(tmp_path: Path) -> None:
    repo = _repo_copy(tmp_path)
    pyproject = (repo / "pyproject.toml").read_text(encoding="utf-8")
    assert "dependencies = []\n" in pyproject
    (repo / "pyproject.toml").write_text(pyproject.replace("dependencies = []\n", 'dependencies = ["pandas>=1.4"]\n'),
                                         encoding="utf-8")

    result = _build(repo, repo / "dist")

    assert result.returncode == 1
    assert "build-glue: the wheels are not fit for Glue Python shell 3.9:" in result.stderr
    assert "No matching distribution found for pandas" in result.stderr
    assert not (repo / "dist" / "glue").exists()


def test_build_glue_refuses_a_glue_pin_other_than_make_run_s(tmp_path: Path) -> None:
    repo = _repo_copy(tmp_path)
    run = (repo / "requirements" / "run.txt").read_text(encoding="utf-8")
    assert "\npython-calamine==0.4.0\n" in run
    (repo / "requirements" / "run.txt").write_text(run.replace("python-calamine==0.4.0", "python-calamine==0.4.1"),
                                                   encoding="utf-8")

    result = _build(repo, repo / "dist")

    assert result.returncode == 1
    assert ("glue_job/requirements.txt pins python-calamine==0.4.0, requirements/run.txt python-calamine==0.4.1: "
            "the Glue job and `make run` must use one version") in result.stderr
    assert not (repo / "dist" / "glue").exists()
