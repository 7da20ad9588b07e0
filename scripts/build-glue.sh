#!/usr/bin/env bash
# Build the healthtech_etl wheel and stage it with the Glue job script (`make build-glue`).
#
#   dist/healthtech_etl-<version>-py3-none-any.whl   what the Glue job gets via --extra-py-files
#   dist/glue/                                       the wheel + glue_etl.py, ready to upload
#
# A wheel, not an .egg: Glue Python shell 3.9 cannot load .egg files. The wheel is checked
# before it is staged: pure Python, the SQL queries inside (package healthtech_etl.sql), only
# dependencies the Glue "analytics" library set satisfies, and Python 3.9 syntax throughout.
#
# Environment: PYTHON (default .venv/bin/python, which needs the `build` package),
# DIST_DIR (default dist).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
DIST="${DIST_DIR:-dist}"
STAGE="$DIST/glue"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

"$PY" -c "import build" 2>/dev/null || { echo "build-glue: $PY has no 'build' package (make install-dev)" >&2; exit 1; }
rm -rf "$STAGE" build
rm -f "$DIST"/healthtech_etl-*.whl
mkdir -p "$DIST"

# --no-isolation is faster and offline, but only when the build backend pyproject.toml asks for
# (setuptools>=68, wheel) is installed in $PY; otherwise build in an isolated env from PyPI.
if "$PY" - <<'PYEOF' 2>/dev/null
import setuptools, wheel  # noqa: F401
raise SystemExit(0 if int(setuptools.__version__.split(".")[0]) >= 68 else 1)
PYEOF
then
    mode=(--no-isolation)
else
    mode=()
fi
if ! "$PY" -m build --wheel "${mode[@]}" --outdir "$DIST" . >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "build-glue: wheel build failed" >&2
    exit 1
fi
rm -rf build

WHEEL="$(ls "$DIST"/healthtech_etl-*-py3-none-any.whl)"
"$PY" - "$WHEEL" glue_job/glue_etl.py <<'PYEOF'
"""Refuse a wheel that would not work on Glue Python shell 3.9."""
import ast
import re
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

wheel_path, script = sys.argv[1], sys.argv[2]
problems = []
with zipfile.ZipFile(wheel_path) as wheel:
    names = wheel.namelist()
    meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(meta_name).decode("utf-8"))
    sources = {n: wheel.read(n).decode("utf-8") for n in names if n.endswith(".py")}

# 1. The SQL queries ship inside the package, all of them.
expected_sql = sorted(p.name for p in Path("sql").glob("*.sql"))
shipped_sql = sorted(n.rsplit("/", 1)[1] for n in names if re.fullmatch(r"healthtech_etl/sql/[^/]+\.sql", n))
if not expected_sql or shipped_sql != expected_sql:
    problems.append(f"SQL files in the wheel {shipped_sql} != sql/*.sql {expected_sql}")
# quality_report.html inlines the vendored chart libraries: they must ship in the wheel.
for required in ("healthtech_etl/assets/vega.min.js", "healthtech_etl/assets/vega-lite.min.js",
                 "healthtech_etl/assets/vega-embed.min.js"):
    if required not in names:
        problems.append(f"{required} missing from the wheel (pyproject package-data)")
for required in ("healthtech_etl/__init__.py", "healthtech_etl/pipeline.py"):
    if required not in names:
        problems.append(f"{required} missing from the wheel")
stray = [n for n in names if not n.startswith(("healthtech_etl/", "healthtech_etl-"))]
if stray:
    problems.append(f"unexpected files in the wheel: {stray[:5]}")

# 2. Runtime dependencies: only what the Glue analytics set provides (extras are optional).
allowed = {"pandas", "numpy", "openpyxl", "pg8000"}
required = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
names_required = {re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0].lower() for r in required}
if names_required - allowed:
    problems.append(f"runtime dependencies Glue lacks: {sorted(names_required - allowed)}")
if metadata.get("Requires-Python") != ">=3.9":
    problems.append(f"Requires-Python is {metadata.get('Requires-Python')!r}, not '>=3.9'")

# 3. Python 3.9 syntax (no match, no parenthesised context managers...) and no `X | Y`
#    annotations evaluated at runtime (they raise TypeError on 3.9).
sources[script] = Path(script).read_text(encoding="utf-8")
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

if problems:
    print("build-glue: the wheel is not fit for Glue Python shell 3.9:", *problems, sep="\n  ", file=sys.stderr)
    raise SystemExit(1)
print(f"build-glue: {wheel_path} ok ({len(shipped_sql)} queries; requires {', '.join(sorted(required))})")
PYEOF

mkdir -p "$STAGE"
cp "$WHEEL" glue_job/glue_etl.py "$STAGE/"
echo "build-glue: staged for upload: $(ls "$STAGE" | tr '\n' ' ')"
