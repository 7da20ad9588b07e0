#!/usr/bin/env bash
# Build the healthtech_etl wheel and stage it with the Glue job script and the job's library
# wheels (`make build-glue`).
#
#   dist/healthtech_etl-<version>-py3-none-any.whl   the project's wheel
#   dist/glue/                                       what the stack uploads to glue/: glue_etl.py and
#                                                    the --extra-py-files wheels - packaging,
#                                                    python-calamine (cp39 manylinux2014 x86_64, as
#                                                    Glue-installable copy), healthtech_etl
#   dist/wheel-cache/                                the pinned library wheels as downloaded once
#
# A wheel, not an .egg: Glue Python shell 3.9 cannot load .egg files. The library wheels are the
# pins of glue_job/requirements.txt: fetched once (pip download, hashes required), their sha256
# verified on every build, staged by glue_job/glue_wheels.py. All wheels are checked before they
# are staged (scripts/check_glue_wheel.py): the package pure Python with its SQL queries
# (package healthtech_etl.sql), NO unconditional Requires-Dist in any wheel, Python 3.9 syntax,
# the pins those of requirements/run.txt, and every wheel must install the way Glue's launcher
# installs it, offline, one at a time into one directory: `pip install --no-index --target <dir>
# <wheel>` - on a CPython 3.9 (x86_64 Linux) when there is one ($GLUE_PYTHON, PATH, pyenv).
#
# Environment: PYTHON (default .venv/bin/python, which needs the `build` package),
# DIST_DIR (default dist), GLUE_WHEEL_CACHE (default dist/wheel-cache), GLUE_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
DIST="${DIST_DIR:-dist}"
STAGE="$DIST/glue"
LOG="$(mktemp)"
LIBS_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG" "$LIBS_DIR"' EXIT

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

# The pinned library wheels (downloaded only when not cached yet), verified, in install order.
if ! "$PY" glue_job/glue_wheels.py stage "$LIBS_DIR" >"$LOG"; then
    echo "build-glue: the library wheels of glue_job/requirements.txt could not be staged" >&2
    exit 1
fi
LIBS=()
while IFS= read -r line; do LIBS+=("$line"); done <"$LOG"

"$PY" scripts/check_glue_wheel.py "$WHEEL" glue_job/glue_etl.py "${LIBS[@]}"

mkdir -p "$STAGE"
cp "$WHEEL" glue_job/glue_etl.py "${LIBS[@]}" "$STAGE/"
echo "build-glue: staged for upload: $(ls "$STAGE" | tr '\n' ' ')"
