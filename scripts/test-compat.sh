#!/usr/bin/env bash
# Glue-runtime compatibility lane (`make test-compat`, .ci/run): the pipeline and Glue job tests on
# AWS Glue Python shell 3.9's own libraries, against the *staged wheels installed the way Glue's
# launcher installs them*.
#
#   venv .venv-compat   requirements/compat.txt: Glue's "analytics" set (pandas 1.4.2, numpy 1.22.3,
#                       awswrangler 2.15.1 and its closure: pyarrow 7.0.0, openpyxl 3.0.10 - the
#                       tests' reference reader only -, pg8000 1.29.1) plus the test tools
#   --target dir        <venv>/glue-python-libs: what Glue's --extra-py-files give the job - the
#                       packaging and python-calamine wheels staged by scripts/build-glue.sh (the pins
#                       of glue_job/requirements.txt) and the project's wheel
#   tests               unit (but the static house rules), integration (TLS included), the Glue job
#                       and the wheel tests
#
# Nothing of the package or its reader is installed into the venv: scripts/build-glue.sh builds
# and checks the wheels with the venv's Python (its check installs them with pip --target there),
# then each staged wheel is installed on its own, in --extra-py-files order, with
# `pip install --no-index --target <venv>/glue-python-libs <wheel>` as Glue's launcher does, and
# the tests run with that directory first on sys.path (PYTHONPATH), where the Glue job tests launch
# glue_etl.py as __main__ (tests/aws/glue_launcher.py).
#
# Python: $COMPAT_PYTHON, else a Python 3.9 (pyenv's if installed); none: the lane fails.
# The venv is rebuilt only when compat.txt or the interpreter change (stamp file). Extra arguments
# go to pytest (e.g. `bash scripts/test-compat.sh -x tests/unit`: replaces the test selection when
# it names a path).
set -euo pipefail
cd "$(dirname "$0")/.."

REQS=requirements/compat.txt
VENV=.venv-compat
TESTS=(tests/unit tests/integration tests/aws/test_glue_etl_job.py tests/aws/test_glue_wheel.py)
# Static checks of the source tree, with dev-only tools (grimp has no release for Python 3.9 at the
# lock's pin): the main lane (`make test`) runs them; this lane is about Glue's runtime.
STATIC=(--ignore=tests/unit/test_house_rules.py)

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

if [[ -n "${COMPAT_LANES:-}" && "${COMPAT_LANES}" != "glue" ]]; then
    echo "test-compat: the only lane is 'glue' (the pyarrow 4 lane went with the Arrow fast paths)" >&2
    exit 2
fi

BASE_PY="$(find_python)"
BASE_VERSION="$("$BASE_PY" -c 'import sys; print(".".join(map(str, sys.version_info[:3])))')"
PY="$VENV/bin/python"
TARGET="$(pwd)/$VENV/glue-python-libs"

# The venv with Glue's library set; rebuilt when compat.txt or the interpreter change.
stamp_value="$BASE_VERSION $(sha256sum "$REQS" | cut -c1-64)"
if [[ ! -f "$VENV/.stamp-compat" || "$(cat "$VENV/.stamp-compat")" != "$stamp_value" ]]; then
    echo "test-compat: creating $VENV with Python $BASE_VERSION, $REQS" >&2
    rm -rf "$VENV"
    "$BASE_PY" -m venv "$VENV"
    # Binary wheels only for the numeric stack: never compile an old pandas/pyarrow from source.
    "$PY" -m pip install -q --disable-pip-version-check --only-binary pandas,numpy,pyarrow -r "$REQS" >&2
    "$PY" -m pip check >&2
    echo "$stamp_value" >"$VENV/.stamp-compat"
fi

# The wheels as Glue gets them: built, checked (on this Python) and staged by build-glue, then
# installed one at a time, offline, in --extra-py-files order (no pip configuration: none on Glue).
PYTHON="$PY" DIST_DIR="$VENV/dist" bash scripts/build-glue.sh >/dev/null
WHEELS=()
while IFS= read -r line; do WHEELS+=("$line"); done < <("$PY" glue_job/glue_wheels.py list "$VENV/dist/glue")
[[ ${#WHEELS[@]} -gt 0 ]] || { echo "test-compat: no library wheels staged in $VENV/dist/glue" >&2; exit 1; }
WHEELS+=("$(ls "$VENV"/dist/glue/healthtech_etl-*.whl)")
rm -rf "$TARGET"
for wheel in "${WHEELS[@]}"; do
    (
        unset "${!PIP_@}"
        PIP_CONFIG_FILE=/dev/null "$PY" -m pip install -q --disable-pip-version-check --no-index --no-cache-dir \
            --target "$TARGET" "$wheel"
    )
done

PYTHONPATH="$TARGET" "$PY" - "$TARGET" <<'PYEOF'
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
import packaging
import python_calamine

target = sys.argv[1]
for module in (healthtech_etl, python_calamine, packaging):
    if not os.path.abspath(module.__file__).startswith(target + os.sep):
        raise SystemExit(f"test-compat: {module.__name__} imported from {module.__file__}, not the --target dir {target}")
if importlib.util.find_spec("fastexcel"):
    raise SystemExit("test-compat: fastexcel is installed, but the product has one reader: python-calamine")
in_target = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions(path=[target])}
print(f"test-compat: Python {sys.version.split()[0]}, pandas {pandas.__version__}, numpy {numpy.__version__}, "
      f"pg8000 {pg8000.__version__}, pyarrow {importlib.metadata.version('pyarrow')} and "
      f"awswrangler {importlib.metadata.version('awswrangler')} (Glue's, unused by the package), "
      f"openpyxl {openpyxl.__version__} (tests' reference reader); from {target}: "
      + ", ".join(f"{name} {version}" for name, version in sorted(in_target.items())))
PYEOF

# A path among the extra arguments replaces the default selection.
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then TESTS=(); break; fi
done
# -p no:cacheprovider: no .pytest_cache. PYTHONPATH: the --target dir, as on Glue.
# --basetemp: the lane's own temporary root; under /tmp/pytest-of-<user> other pytest runs
# on the machine delete all but the 3 newest, live embedded PostgreSQL data dirs included.
# REQUIRE_TLS_TESTS: a missing TLS-capable PostgreSQL fails the lane instead of skipping.
PYTHONPATH="$TARGET" REQUIRE_TLS_TESTS="${REQUIRE_TLS_TESTS:-1}" \
    "$PY" -m pytest -q -p no:cacheprovider --basetemp "$(pwd)/$VENV/pytest-tmp" "${STATIC[@]}" "${TESTS[@]}" "$@"
