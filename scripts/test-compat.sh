#!/usr/bin/env bash
# Glue-runtime compatibility lane (`make test-compat`, .ci/run): the pipeline tests and the Glue
# job tests again, on the libraries AWS Glue Python shell has, against the *built wheel*.
#
# Python: $COMPAT_PYTHON, else a Python 3.9 (Glue's version; pyenv's if installed), else
# python3 with the fallback pins of requirements/compat.txt. The venv (.venv-compat) is
# rebuilt only when requirements/compat.txt or the interpreter changes (stamp file); the wheel
# is rebuilt and reinstalled on every run, so the lane always tests the current code.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-compat
REQS=requirements/compat.txt
TESTS=(tests/unit tests/integration tests/aws/test_glue_etl_job.py)

find_python() {
    if [[ -n "${COMPAT_PYTHON:-}" ]]; then echo "$COMPAT_PYTHON"; return; fi
    local candidate
    for candidate in python3.9 "$(pyenv root 2>/dev/null)"/versions/3.9*/bin/python3.9 \
                     "$HOME"/.pyenv/versions/3.9*/bin/python3.9; do
        # (pyenv's shims exist on PATH even for versions they will refuse to run: try it)
        if [[ -n "$candidate" ]] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' \
                >/dev/null 2>&1; then
            "$candidate" -c 'import sys; print(sys.executable)'; return
        fi
    done
    echo "test-compat: no Python 3.9 found, falling back to python3 (pins for newer Pythons)" >&2
    command -v "${PYTHON_BOOT:-python3}"
}

BASE_PY="$(find_python)"
BASE_VERSION="$("$BASE_PY" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')"
STAMP_VALUE="$BASE_VERSION $(sha256sum "$REQS" | cut -c1-64)"
STAMP="$VENV/.stamp-compat"

if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$STAMP_VALUE" ]]; then
    echo "test-compat: creating $VENV with Python $BASE_VERSION and $REQS"
    rm -rf "$VENV"
    "$BASE_PY" -m venv "$VENV"
    # Binary wheels only for the numeric stack: never compile an old pandas from source.
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        --only-binary pandas,numpy -r "$REQS"
    "$VENV/bin/python" -m pip check
    echo "$STAMP_VALUE" >"$STAMP"
fi
PY="$VENV/bin/python"

# The package as Glue gets it: the wheel, installed without dependencies.
DIST="$VENV/dist"
PYTHON="$PY" DIST_DIR="$DIST" bash scripts/build-glue.sh >/dev/null
"$PY" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$DIST"/healthtech_etl-*.whl

"$PY" - "$VENV" <<'PYEOF'
"""Say what the lane runs on, and refuse to run on the wrong thing."""
import importlib.util
import os
import sys

import numpy
import openpyxl
import pandas
import pg8000

import healthtech_etl

venv = os.path.abspath(sys.argv[1])
if not os.path.abspath(healthtech_etl.__file__).startswith(venv):
    raise SystemExit(f"test-compat: healthtech_etl imported from {healthtech_etl.__file__}, not the wheel in {venv}")
present = [name for name in ("python_calamine", "fastexcel", "pyarrow") if importlib.util.find_spec(name)]
if present:
    raise SystemExit(f"test-compat: {present} installed, but Glue has none of them")
print(f"test-compat: Python {sys.version.split()[0]}, pandas {pandas.__version__}, numpy {numpy.__version__}, "
      f"openpyxl {openpyxl.__version__}, pg8000 {pg8000.__version__}, healthtech_etl from the wheel")
PYEOF

# -p no:cacheprovider: no .pytest_cache; the lane's tests import the installed wheel, not src/.
"$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}" "$@"
