"""Refuse Glue wheels that would not work on AWS Glue Python shell 3.9 (run by scripts/build-glue.sh).

    python scripts/check_glue_wheel.py dist/healthtech_etl-1.0.0-py3-none-any.whl glue_job/glue_etl.py \\
        [the staged library wheels of glue_job/requirements.txt, in install order]

Checks, each a line on stderr when it fails (exit 1):

1. contents: the package, all of sql/*.sql inside it, nothing else;
2. metadata: no unconditional ``Requires-Dist`` in any of the wheels (Glue's launcher installs each
   ``--extra-py-files`` wheel with its own ``pip install --target``, which ignores the preinstalled
   libraries, and the job's subnets have no route to PyPI), ``Requires-Python: >=3.9``;
3. Python 3.9 syntax in the package and the job script, no ``X | Y`` annotations evaluated at
   runtime;
4. pins: glue_job/requirements.txt pins the versions of requirements/run.txt (one version on
   every path), and the library wheels are those versions;
5. the launcher's own install, offline: ``pip install --no-index --target <tmp> <wheel>`` once per
   wheel, libraries first, into one directory - on CPython 3.9 x86_64 Linux (this Python, $GLUE_PYTHON
   or a python3.9 found on PATH or in pyenv), which then imports python-calamine and packaging from
   it; without such a Python, pip's --python-version/--platform emulation with this one (said so).
"""

import ast
import re
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

PACKAGE = "healthtech_etl"


def contents_problems(names: list) -> list:
    problems = []
    expected_sql = sorted(p.name for p in Path("sql").glob("*.sql"))
    shipped_sql = sorted(n.rsplit("/", 1)[1] for n in names if re.fullmatch(rf"{PACKAGE}/sql/[^/]+\.sql", n))
    if not expected_sql or shipped_sql != expected_sql:
        problems.append(f"SQL files in the wheel {shipped_sql} != sql/*.sql {expected_sql}")
    # quality_report.html inlines the vendored chart libraries: they must ship in the wheel.
    for required in (f"{PACKAGE}/__init__.py", f"{PACKAGE}/pipeline.py", f"{PACKAGE}/assets/vega.min.js",
                     f"{PACKAGE}/assets/vega-lite.min.js", f"{PACKAGE}/assets/vega-embed.min.js"):
        if required not in names:
            problems.append(f"{required} missing from the wheel")
    stray = [n for n in names if not n.startswith((f"{PACKAGE}/", f"{PACKAGE}-"))]
    if stray:
        problems.append(f"unexpected files in the wheel: {stray[:5]}")
    return problems


def metadata_problems(metadata_text: str) -> list:
    metadata = Parser().parsestr(metadata_text)
    problems = []
    unconditional = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    if unconditional:
        problems.append(
            f"unconditional Requires-Dist {unconditional}: Glue's launcher (pip install --target, offline) "
            "cannot satisfy them; document runtime libraries, or move them to an extra")
    if metadata.get("Requires-Python") != ">=3.9":
        problems.append(f"Requires-Python is {metadata.get('Requires-Python')!r}, not '>=3.9'")
    return problems


def syntax_problems(sources: dict) -> list:
    problems = []
    for name, text in sources.items():
        try:
            tree = ast.parse(text, filename=name, feature_version=(3, 9))
        except SyntaxError as exc:
            problems.append(f"{name}:{exc.lineno}: not Python 3.9 syntax: {exc.msg}")
            continue
        if any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == "annotations" for alias in node.names) for node in tree.body):
            continue
        annotations = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                args += [a for a in (node.args.vararg, node.args.kwarg) if a]
                annotations += [a.annotation for a in args if a.annotation] + ([node.returns] if node.returns else [])
            elif isinstance(node, ast.AnnAssign):
                annotations.append(node.annotation)
        for annotation in annotations:
            if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(annotation)):
                problems.append(f"{name}:{annotation.lineno}: `X | Y` annotation fails at runtime on Python 3.9")
    return problems


def _glue_wheels():
    """glue_job/glue_wheels.py (the pins and their parsing), imported by path."""
    import importlib.util

    if "glue_wheels" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "glue_job" / "glue_wheels.py"
        spec = importlib.util.spec_from_file_location("glue_wheels", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["glue_wheels"] = module
        spec.loader.exec_module(module)
    return sys.modules["glue_wheels"]


def _pinned(path: Path) -> dict:
    """``{normalized name: version}`` of the ``name==version`` lines of a requirements file."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return found


def pin_problems(pins: list, library_wheels: list) -> list:
    """One version on every path: glue_job/requirements.txt == requirements/run.txt, and the wheels."""
    problems = []
    run = _pinned(Path("requirements/run.txt"))
    for pin in pins:
        name = re.sub(r"[-_.]+", "-", pin.name).lower()
        if run.get(name) != pin.version:
            problems.append(f"glue_job/requirements.txt pins {pin.name}=={pin.version}, requirements/run.txt "
                            f"{name}=={run.get(name)}: the Glue job and `make run` must use one version")
    names = [Path(w).name for w in library_wheels]
    if len(names) != len(pins) or not all(n.startswith(pin.prefix) for n, pin in zip(names, pins)):
        problems.append(f"library wheels {names} are not those of glue_job/requirements.txt "
                        f"{[pin.prefix + '*.whl' for pin in pins]}, in that order")
    for wheel in library_wheels:
        with zipfile.ZipFile(wheel) as archive:
            meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            unconditional = _glue_wheels().unconditional_requirements(archive.read(meta).decode("utf-8"))
        if unconditional:
            problems.append(f"{Path(wheel).name} declares {unconditional}: Glue's launcher installs it alone, "
                            "offline, and would go to PyPI for them")
    return problems


def glue_python() -> tuple:
    """``(python, how)``: a CPython 3.9 on x86_64 Linux to install and import with, as Glue's workers
    are; ``(None, why not)`` when there is none here."""
    import os
    import platform
    import shutil

    def is_glue_like(python: str) -> bool:
        probe = "import platform, sys; sys.exit(not (sys.version_info[:2] == (3, 9) and " \
                "sys.implementation.name == 'cpython' and platform.system() == 'Linux' and " \
                "platform.machine() == 'x86_64'))"
        try:
            return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
        except OSError:
            return False

    pyenv = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("pyenv") else str(Path.home() / ".pyenv")
    candidates = [os.environ.get("GLUE_PYTHON", ""), sys.executable, shutil.which("python3.9") or ""]
    candidates += sorted(str(p) for p in Path(pyenv or ".").glob("versions/3.9*/bin/python3.9"))
    for candidate in candidates:
        if candidate and is_glue_like(candidate):
            return candidate, f"Python 3.9 {candidate}"
    return None, f"no CPython 3.9 on x86_64 Linux here ({platform.system()} {platform.machine()})"


def _offline_env() -> dict:
    """No pip configuration at all (a find-links or mirror in it is not on Glue either)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


IMPORT_PROBE = """
import importlib.metadata as md, sys
target = sys.argv[1]
sys.path.insert(0, target)
import packaging.version, python_calamine
for module in (packaging, python_calamine):
    assert module.__file__.startswith(target), module.__file__
print(" ".join(f"{d.metadata['Name']}=={d.version}" for d in md.distributions(path=[target])))
"""


def launcher_install_problems(wheels: list) -> tuple:
    """What Glue's launcher does with the --extra-py-files wheels, offline: one ``pip install
    --no-index --target <dir> <wheel>`` each, in order, into one directory. ``(problems, how)``."""
    python, how = glue_python()
    emulation = [] if python else ["--only-binary=:all:", "--python-version", "3.9", "--implementation", "cp",
                                   "--abi", "cp39", "--platform", "manylinux2014_x86_64"]
    if not python:
        python, how = sys.executable, how + f": pip's cp39 manylinux2014_x86_64 emulation with {sys.executable}"
    with tempfile.TemporaryDirectory(prefix="glue-target-") as target:
        for wheel in wheels:
            result = subprocess.run(
                [python, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--quiet", "--target", target,
                 *emulation, str(wheel)],
                capture_output=True, text=True, timeout=300, env=_offline_env(),
            )
            if result.returncode != 0:
                lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
                errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
                return [f"`pip install --no-index --target` fails (as it would on Glue) for {Path(wheel).name}: "
                        f"{' | '.join(errors)}"], how
        installed = Path(target) / PACKAGE
        if not (installed / "pipeline.py").is_file() or not list((installed / "sql").glob("*.sql")):
            return [f"`pip install --no-index --target` did not install {PACKAGE} with its SQL"], how
        if len(wheels) > 1 and not emulation:
            probe = subprocess.run([python, "-c", IMPORT_PROBE, target], capture_output=True, text=True, timeout=120)
            if probe.returncode != 0:
                return [f"python-calamine/packaging do not import from the --target dir: "
                        f"{probe.stderr.strip().splitlines()[-1:]}"], how
            how += f", imports {probe.stdout.strip()}"
    return [], how


def main(argv: list) -> int:
    wheel_path, script, libraries = argv[1], argv[2], argv[3:]
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata_text = wheel.read(meta_name).decode("utf-8")
        sources = {n: wheel.read(n).decode("utf-8") for n in names if n.endswith(".py")}
    sources[script] = Path(script).read_text(encoding="utf-8")
    problems = contents_problems(names) + metadata_problems(metadata_text) + syntax_problems(sources)
    if libraries:
        problems += pin_problems(_glue_wheels().read_pins(), libraries)
    install_problems, how = launcher_install_problems([*libraries, wheel_path])
    problems += install_problems
    if problems:
        print("build-glue: the wheels are not fit for Glue Python shell 3.9:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    shipped_sql = [n for n in names if n.endswith(".sql")]
    shipped = ", ".join(Path(w).name for w in libraries)
    print(f"build-glue: {wheel_path} ok ({len(shipped_sql)} queries; no Requires-Dist"
          + (f"; with {shipped}" if libraries else "")
          + f"; installs with pip install --no-index --target, one wheel at a time: {how})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
