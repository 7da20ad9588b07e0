#!/usr/bin/env bash
# Run the pinned AWS CDK CLI (infra/package.json, installed into infra/node_modules) on infra/app.py.
#
#   scripts/cdk.sh synth [cdk args]      offline: no AWS account, no lookups, no notices/telemetry
#   scripts/cdk.sh deploy [cdk args]     e.g. -c env=prod -c alertEmail=ops@example.org
#   scripts/cdk.sh diff|destroy [cdk args]   the stack of the env in the args (default: cdk.json's, dev)
#   scripts/cdk.sh check-destroy [cdk args]  only the prod guard below, without cdk (make destroy)
#   scripts/cdk.sh bootstrap aws://ACCOUNT/REGION   once per account and region (needs no venv or wheel)
#   scripts/cdk.sh <any cdk command>     ls, ...
#
# The app has one stack per environment, HealthTechEtl-<env> (context env). `destroy` of env=prod
# refuses (exit 2, before running cdk) unless CONFIRM_PROD=yes is set.
#
# The app runs with the project venv (PY, default .venv/bin/python); `make synth` / `make deploy`
# create it, build the Glue wheel into dist/ and stage the job's library wheels (python-calamine,
# packaging) in dist/glue/ first. `deploy` first downloads AWS's RDS CA bundle (RDS_CA_BUNDLE_URL)
# to dist/rds-ca/global-bundle.pem (git-ignored), which the stack copies beside the Glue script; it
# refuses to deploy without it (the job verifies RDS with it).
# REQUIRE_APPROVAL (never | any-change | broadening) is passed to deploy as --require-approval.
# CDK_BIN runs another CDK CLI instead of the pinned one (the tests use a stand-in that records its
# arguments); then nothing is installed from npm.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INFRA="$ROOT/infra"
PY="${PY:-$ROOT/.venv/bin/python}"

if [[ $# -eq 0 ]]; then
  echo "usage: scripts/cdk.sh {synth|deploy|diff|destroy|check-destroy|bootstrap|ls} [cdk options]" >&2
  exit 2
fi
cmd="$1"
shift

# The environment these arguments select: the last -c/--context env=..., else cdk.json's.
target_env() {
  local env="" arg value
  env="$(sed -n 's/^ *"env": *"\([^"]*\)".*/\1/p' "$INFRA/cdk.json" | head -n 1)"
  while [[ $# -gt 0 ]]; do
    arg="$1"
    shift
    case "$arg" in
      -c | --context) value="${1:-}"; [[ $# -gt 0 ]] && shift ;;
      --context=* | -c=*) value="${arg#*=}" ;;
      *) continue ;;
    esac
    [[ "$value" == env=* ]] && env="${value#env=}"
  done
  env="$(printf '%s' "${env:-dev}" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')"
  echo "${env:-dev}"
}

if [[ "$cmd" == "destroy" || "$cmd" == "check-destroy" ]]; then
  if [[ "$(target_env "$@")" == "prod" && "${CONFIRM_PROD:-}" != "yes" ]]; then
    echo "cdk.sh: refusing to destroy the prod stack HealthTechEtl-prod without CONFIRM_PROD=yes (it keeps a database snapshot, the buckets and the log groups, see the README's Teardown): make destroy CONTEXT=\"-c env=prod ...\" CONFIRM_PROD=yes" >&2
    exit 2
  fi
  [[ "$cmd" == "check-destroy" ]] && exit 0
fi

CDK="${CDK_BIN:-$INFRA/node_modules/.bin/cdk}"
if [[ -z "${CDK_BIN:-}" ]]; then
  command -v npm >/dev/null || { echo "cdk.sh: npm (Node.js >= 18) is required for the CDK CLI" >&2; exit 1; }
fi
# bootstrap deploys CDK's own toolkit stack into an explicit aws://ACCOUNT/REGION: it does not
# run our app (which is environment-agnostic), so it needs neither the venv nor the wheel.
if [[ "$cmd" != "bootstrap" ]]; then
  [[ -x "$PY" ]] || { echo "cdk.sh: $PY not found: run 'make install-dev' (or set PY=/path/to/python)" >&2; exit 1; }
  if ! compgen -G "$ROOT/dist/healthtech_etl-*-py3-none-any.whl" >/dev/null; then
    echo "cdk.sh: no wheel in dist/: run 'make build-glue' first" >&2
    exit 1
  fi
  # The job's library wheels (glue_job/requirements.txt), verified and staged by build-glue.
  if ! compgen -G "$ROOT/dist/glue/python_calamine-*.whl" >/dev/null \
      || ! compgen -G "$ROOT/dist/glue/packaging-*.whl" >/dev/null; then
    echo "cdk.sh: no python-calamine/packaging wheels in dist/glue/: run 'make build-glue' first" >&2
    exit 1
  fi
fi

# Install the exact CLI version from package-lock.json when missing or different.
if [[ -z "${CDK_BIN:-}" ]]; then
  pinned="$(cd "$INFRA" && node -p 'require("./package-lock.json").packages["node_modules/aws-cdk"].version')"
  installed="$(cd "$INFRA" && node -p 'try { require("./node_modules/aws-cdk/package.json").version } catch (e) { "" }')"
  if [[ "$installed" != "$pinned" ]]; then
    echo "cdk.sh: installing aws-cdk $pinned into infra/node_modules" >&2
    (cd "$INFRA" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi

# Offline and quiet: no version check, no notices, no telemetry; Node 20 runs with a warning only.
export CDK_DISABLE_VERSION_CHECK=1
export CDK_DISABLE_CLI_TELEMETRY=true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1

args=(--no-notices)
case "$cmd" in
  bootstrap)
    ;;
  synth)
    # Writes infra/cdk.out/HealthTechEtl-<env>.template.json; cdk-nag findings fail the synth.
    args+=(--app "$PY app.py" --quiet)
    ;;
  deploy)
    CA_BUNDLE="$ROOT/dist/rds-ca/global-bundle.pem"
    CA_URL="${RDS_CA_BUNDLE_URL:-https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem}"
    mkdir -p "$(dirname "$CA_BUNDLE")"
    echo "cdk.sh: fetching the RDS CA bundle from $CA_URL" >&2
    if ! curl -fsSL --retry 3 -o "$CA_BUNDLE.tmp" "$CA_URL" || ! grep -q "BEGIN CERTIFICATE" "$CA_BUNDLE.tmp"; then
      rm -f "$CA_BUNDLE.tmp"
      echo "cdk.sh: could not download the RDS CA bundle from $CA_URL (the Glue job verifies RDS with it)" >&2
      exit 1
    fi
    mv "$CA_BUNDLE.tmp" "$CA_BUNDLE"
    args+=(--app "$PY app.py")
    if [[ -n "${REQUIRE_APPROVAL:-}" ]]; then
      args+=(--require-approval "$REQUIRE_APPROVAL")
    fi
    ;;
  *)
    args+=(--app "$PY app.py")
    ;;
esac

# bootstrap runs outside infra/ so that the CLI does not pick up (and synthesize) the app of cdk.json.
if [[ "$cmd" == "bootstrap" ]]; then cd "$ROOT"; else cd "$INFRA"; fi
exec "$CDK" "$cmd" "${args[@]}" "$@"
