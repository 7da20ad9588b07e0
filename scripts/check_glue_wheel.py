"""Refuse a wheel that would not work on AWS Glue Python shell 3.9 (run by scripts/build-glue.sh).

    python scripts/check_glue_wheel.py dist/healthtech_etl-1.0.0-py3-none-any.whl glue_job/glue_etl.py

Checks, each a line on stderr when it fails (exit 1):

1. contents: the package, all of sql/*.sql inside it, nothing else;
2. metadata: no unconditional ``Requires-Dist`` (Glue's launcher installs the wheel with
   ``pip install --target``, which ignores the preinstalled libraries, and the job's subnets
   have no route to PyPI), ``Requires-Python: >=3.9``;
3. Python 3.9 syntax in the package and the job script, no ``X | Y`` annotations evaluated at
   runtime;
4. the launcher's own install, offline: ``pip install --no-index --target <tmp> <wheel>`` with
   this Python must succeed and put the package and its SQL in <tmp>.
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


def offline_install_problems(wheel_path: str) -> list:
    """What Glue's launcher does with an --extra-py-files wheel, without an index."""
    with tempfile.TemporaryDirectory(prefix="glue-target-") as target:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
             "--quiet", "--target", target, wheel_path],
            capture_output=True, text=True, timeout=300,
        )
        if result.returncode != 0:
            lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
            return [f"`pip install --no-index --target` fails (as it would on Glue): {' | '.join(errors)}"]
        installed = Path(target) / PACKAGE
        if not (installed / "pipeline.py").is_file() or not list((installed / "sql").glob("*.sql")):
            return [f"`pip install --no-index --target` did not install {PACKAGE} with its SQL"]
    return []


def main(argv: list) -> int:
    wheel_path, script = argv[1], argv[2]
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata_text = wheel.read(meta_name).decode("utf-8")
        sources = {n: wheel.read(n).decode("utf-8") for n in names if n.endswith(".py")}
    sources[script] = Path(script).read_text(encoding="utf-8")
    problems = contents_problems(names) + metadata_problems(metadata_text) + syntax_problems(sources)
    problems += offline_install_problems(wheel_path)
    if problems:
        print("build-glue: the wheel is not fit for Glue Python shell 3.9:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    shipped_sql = [n for n in names if n.endswith(".sql")]
    print(f"build-glue: {wheel_path} ok ({len(shipped_sql)} queries; no Requires-Dist; "
          "installs with pip install --no-index --target)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
