#!/usr/bin/env bash
# Glue-runtime compatibility lanes (`make test-compat`, .ci/run): the pipeline and Glue job
# tests on AWS Glue Python shell 3.9's own libraries, against the *built wheel installed the
# way Glue's launcher installs it*.
#
#   glue      requirements/compat.txt: Glue's "analytics" set (pandas 1.4.2, numpy 1.22.3,
#             awswrangler 2.15.1 and its closure: pyarrow 7.0.0, openpyxl 3.0.10, pg8000 1.29.1)
#             -> unit, integration (incl. TLS), Glue job and wheel tests; the Arrow fast paths ON.
#   pyarrow4  the same with requirements/compat-pyarrow4.txt (pyarrow 4.0.1)
#             -> unit and Glue job tests; the Arrow fast paths must be OFF (fallback proven).
#
# The package is never installed into the venvs: scripts/build-glue.sh builds the wheel with
# the lane's Python (its check runs `pip install --no-index --target` there), then
# `pip install --no-index --target <venv>/glue-python-libs <wheel>` as Glue's launcher does,
# and the tests run with that directory on sys.path (PYTHONPATH), where the Glue job tests
# launch glue_etl.py as __main__ (tests/aws/glue_launcher.py).
#
# Python: $COMPAT_PYTHON, else a Python 3.9 (pyenv's if installed); none: the lane fails.
# Venvs (.venv-compat, .venv-compat-pyarrow4) are rebuilt only when their requirement files
# or the interpreter change (stamp file). COMPAT_LANES="glue" runs one lane; extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

LANES=(${COMPAT_LANES:-glue pyarrow4})
REQS=requirements/compat.txt

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
    echo "test-compat: no Python 3.9 found (Glue Python shell runs 3.9): install one (pyenv install 3.9) or set COMPAT_PYTHON" >&2
    exit 1
}

BASE_PY="$(find_python)"
BASE_VERSION="$("$BASE_PY" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')"

# venv_for LANE -> creates/refreshes the lane's venv, prints its path.
venv_for() {
    local lane="$1" venv extra=() stamp_value
    case "$lane" in
        glue) venv=.venv-compat ;;
        pyarrow4) venv=.venv-compat-pyarrow4; extra=(requirements/compat-pyarrow4.txt) ;;
        *) echo "test-compat: unknown lane $lane (glue, pyarrow4)" >&2; exit 2 ;;
    esac
    stamp_value="$BASE_VERSION $(cat "$REQS" "${extra[@]}" | sha256sum | cut -c1-64)"
    if [[ ! -f "$venv/.stamp-compat" || "$(cat "$venv/.stamp-compat")" != "$stamp_value" ]]; then
        echo "test-compat: creating $venv with Python $BASE_VERSION, $REQS ${extra[*]}" >&2
        rm -rf "$venv"
        "$BASE_PY" -m venv "$venv"
        local reqs="$venv/requirements.txt"
        if [[ ${#extra[@]} -gt 0 ]]; then  # the lane's pins replace compat.txt's
            local names
            names="$(grep -hoE '^[A-Za-z0-9_.-]+==' "${extra[@]}" | sed 's/==$//' | paste -sd'|')"
            grep -viE "^($names)(\[.*\])?==" "$REQS" >"$reqs"
            cat "${extra[@]}" >>"$reqs"
        else
            cp "$REQS" "$reqs"
        fi
        # Binary wheels only for the numeric stack: never compile an old pandas/pyarrow from source.
        "$venv/bin/python" -m pip install -q --disable-pip-version-check \
            --only-binary pandas,numpy,pyarrow -r "$reqs" >&2
        "$venv/bin/python" -m pip check >&2
        echo "$stamp_value" >"$venv/.stamp-compat"
    fi
    echo "$venv"
}

run_lane() {
    local lane="$1"; shift
    local venv py target tests arrow
    venv="$(venv_for "$lane")"
    py="$venv/bin/python"
    target="$(pwd)/$venv/glue-python-libs"
    case "$lane" in
        glue) tests=(tests/unit tests/integration tests/aws/test_glue_etl_job.py tests/aws/test_glue_wheel.py)
              arrow=on ;;
        pyarrow4) tests=(tests/unit tests/aws/test_glue_etl_job.py); arrow=off ;;
    esac

    # The package as Glue gets it: the wheel (checked on this Python), installed offline with --target.
    PYTHON="$py" DIST_DIR="$venv/dist" bash scripts/build-glue.sh >/dev/null
    rm -rf "$target"
    "$py" -m pip install -q --disable-pip-version-check --no-index --no-cache-dir \
        --target "$target" "$venv"/dist/healthtech_etl-*.whl

    PYTHONPATH="$target" "$py" - "$target" "$lane" "$arrow" <<'PYEOF'
"""Say what the lane runs on, and refuse to run on the wrong thing."""
import importlib.metadata
import importlib.util
import os
import sys

import numpy
import openpyxl
import pandas
import pg8000

import healthtech_etl
from healthtech_etl import _arrow

target, lane, arrow = sys.argv[1:]
if not os.path.abspath(healthtech_etl.__file__).startswith(target + os.sep):
    raise SystemExit(f"test-compat: healthtech_etl imported from {healthtech_etl.__file__}, not the --target dir {target}")
present = [name for name in ("python_calamine", "fastexcel") if importlib.util.find_spec(name)]
if present:
    raise SystemExit(f"test-compat: {present} installed, but Glue has none of them")
pyarrow_version = importlib.metadata.version("pyarrow")
if (_arrow.pa is not None) != (arrow == "on"):
    raise SystemExit(f"test-compat [{lane}]: Arrow fast paths should be {arrow} with pyarrow {pyarrow_version} "
                     f"({_arrow.disabled_reason or 'enabled'})")
print(f"test-compat [{lane}]: Python {sys.version.split()[0]}, pandas {pandas.__version__}, numpy {numpy.__version__}, "
      f"openpyxl {openpyxl.__version__}, pg8000 {pg8000.__version__}, pyarrow {pyarrow_version} "
      f"(fast paths {arrow}{': ' + _arrow.disabled_reason if _arrow.disabled_reason else ''}), "
      f"awswrangler {importlib.metadata.version('awswrangler')}; healthtech_etl from {target}")
PYEOF

    # -p no:cacheprovider: no .pytest_cache. PYTHONPATH: the --target dir, as on Glue.
    # --basetemp: the lane's own temporary root; under /tmp/pytest-of-<user> other pytest runs
    # on the machine delete all but the 3 newest, live embedded PostgreSQL data dirs included.
    # REQUIRE_TLS_TESTS: a missing TLS-capable PostgreSQL fails the lane instead of skipping.
    PYTHONPATH="$target" REQUIRE_TLS_TESTS="${REQUIRE_TLS_TESTS:-1}" \
        "$py" -m pytest -q -p no:cacheprovider --basetemp "$(pwd)/$venv/pytest-tmp" "${tests[@]}" "$@"
}

for lane in "${LANES[@]}"; do
    run_lane "$lane" "$@"
done
