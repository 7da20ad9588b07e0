#!/usr/bin/env bash
# Build the healthtech_etl wheel and stage it with the Glue job script (`make build-glue`).
#
#   dist/healthtech_etl-<version>-py3-none-any.whl   what the Glue job gets via --extra-py-files
#   dist/glue/                                       the wheel + glue_etl.py, ready to upload
#
# A wheel, not an .egg: Glue Python shell 3.9 cannot load .egg files. The wheel is checked
# before it is staged (scripts/check_glue_wheel.py): pure Python, the SQL queries inside
# (package healthtech_etl.sql), NO unconditional Requires-Dist, Python 3.9 syntax throughout,
# and it must install the way Glue's launcher installs it, offline:
# `pip install --no-index --target <dir> <wheel>` with $PY.
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
"$PY" scripts/check_glue_wheel.py "$WHEEL" glue_job/glue_etl.py

mkdir -p "$STAGE"
cp "$WHEEL" glue_job/glue_etl.py "$STAGE/"
echo "build-glue: staged for upload: $(ls "$STAGE" | tr '\n' ' ')"
