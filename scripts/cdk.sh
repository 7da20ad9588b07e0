#!/usr/bin/env bash
# Run the pinned AWS CDK CLI (infra/package.json, installed into infra/node_modules) on infra/app.py.
#
#   scripts/cdk.sh synth                 offline: no AWS account, no lookups, no notices/telemetry
#   scripts/cdk.sh deploy [cdk args]     e.g. -c env=prod -c alertEmail=ops@example.org
#   scripts/cdk.sh <any cdk command>     bootstrap, diff, destroy, ls ...
#
# The app runs with the project venv (PY, default .venv/bin/python); `make synth` / `make deploy`
# create it and build the Glue wheel into dist/ first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="$ROOT/infra"
PY="${PY:-$ROOT/.venv/bin/python}"

if [[ $# -eq 0 ]]; then
  echo "usage: scripts/cdk.sh {synth|deploy|bootstrap|diff|destroy|ls} [cdk options]" >&2
  exit 2
fi
command -v npm >/dev/null || { echo "cdk.sh: npm (Node.js >= 18) is required for the CDK CLI" >&2; exit 1; }
[[ -x "$PY" ]] || { echo "cdk.sh: $PY not found: run 'make install-dev' (or set PY=/path/to/python)" >&2; exit 1; }
if ! compgen -G "$ROOT/dist/healthtech_etl-*-py3-none-any.whl" >/dev/null; then
  echo "cdk.sh: no wheel in dist/: run 'make build-glue' first" >&2
  exit 1
fi

# Install the exact CLI version from package-lock.json when missing or different.
pinned="$(cd "$INFRA" && node -p 'require("./package-lock.json").packages["node_modules/aws-cdk"].version')"
installed="$(cd "$INFRA" && node -p 'try { require("./node_modules/aws-cdk/package.json").version } catch (e) { "" }')"
if [[ "$installed" != "$pinned" ]]; then
  echo "cdk.sh: installing aws-cdk $pinned into infra/node_modules" >&2
  (cd "$INFRA" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Offline and quiet: no version check, no notices, no telemetry; Node 20 runs with a warning only.
export CDK_DISABLE_VERSION_CHECK=1
export CDK_DISABLE_CLI_TELEMETRY=true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1

cmd="$1"
shift
args=(--no-notices --app "$PY app.py")
case "$cmd" in
  synth)
    # Writes infra/cdk.out/HealthTechEtlStack.template.json; cdk-nag findings fail the synth.
    args+=(--quiet)
    ;;
esac

cd "$INFRA"
exec ./node_modules/.bin/cdk "$cmd" "${args[@]}" "$@"
