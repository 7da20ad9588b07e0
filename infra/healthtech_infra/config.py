"""Deployment settings read from the CDK context (cdk.json, or `-c key=value` on the command line).

Nothing here looks anything up in an AWS account: synth is fully offline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import aws_cdk as cdk
from aws_cdk import Aws, Fn

# infra/healthtech_infra/config.py -> repo root
REPO_ROOT = Path(__file__).resolve().parents[2]
DIST_DIR = REPO_ROOT / "dist"
GLUE_SCRIPT = REPO_ROOT / "glue_job" / "glue_etl.py"
# `make build-glue` stages the job's library wheels (glue_job/requirements.txt) here.
GLUE_STAGE_DIR = DIST_DIR / "glue"
GLUE_WHEELS_MODULE = REPO_ROOT / "glue_job" / "glue_wheels.py"
LAMBDA_DIR = REPO_ROOT / "lambda"

WHEEL_GLOB = "healthtech_etl-*-py3-none-any.whl"
GLUE_PREFIX = "glue/"
REPORT_PREFIX = "reports"
RAW_PREFIX = "raw/"
METRIC_NAMESPACE = "HealthTechETL"
CLAIM_PREFIX = "runs/claims/"
# AWS's global RDS CA bundle: `make deploy` (scripts/cdk.sh) downloads it here (git-ignored) and
# the stack copies it beside the Glue script. Synth and tests work without it (see Storage).
RDS_CA_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
RDS_CA_BUNDLE_PATH = DIST_DIR / "rds-ca" / "global-bundle.pem"
RDS_CA_BUNDLE_NAME = "rds-ca-bundle.pem"
# Glue Python shell writes stdout/stderr to these account-wide groups (not chosen by us).
GLUE_SERVICE_LOG_GROUPS = ("/aws-glue/python-jobs/output", "/aws-glue/python-jobs/error")
# Combined size of both workbooks above which a run gets 1 DPU instead of 1/16 (README "Memory").
DEFAULT_LARGE_INPUT_MB = 16

_REMOVAL_POLICIES = {
    "destroy": cdk.RemovalPolicy.DESTROY,
    "retain": cdk.RemovalPolicy.RETAIN,
    "snapshot": cdk.RemovalPolicy.SNAPSHOT,
}
STACK_NAME_PREFIX = "HealthTechEtl-"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    """A context setting that cannot be used: infra/app.py prints it as one line and exits 2."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class EtlConfig:
    """Every knob of the stack, with prod-safe defaults derived from `env`."""

    env: str
    alert_email: str
    db_instance_class: str
    removal_policy_name: str
    multi_az: bool
    deletion_protection: bool
    backup_retention_days: int
    log_retention_days: int
    glue_timeout_minutes: int
    state_machine_timeout_minutes: int
    # How long a lone workbook's execution waits for its partner before ExportsMissingPartner (alarmed).
    partner_wait_minutes: int = 60
    large_input_mb: int = DEFAULT_LARGE_INPUT_MB
    endpoint_azs: int = 1
    # None: no reserved concurrency (a new account's quota of 10 cannot spare any).
    trigger_reserved_concurrency: int | None = None
    rds_ca_bundle: Path = RDS_CA_BUNDLE_PATH
    load_mode: str = "replace"  # the Glue job's default --LOAD_MODE: replace | merge
    # Glue job runs at once (queuing on: runs beyond it wait in Glue) and clinics a backfill loads at once.
    glue_max_concurrent_runs: int = 10
    backfill_concurrency: int = 10

    @property
    def is_prod(self) -> bool:
        return self.env == "prod"

    @property
    def removal_policy(self) -> cdk.RemovalPolicy:
        """For resources without snapshots (buckets, keys, log groups): snapshot means retain."""
        if self.removal_policy_name == "snapshot":
            return cdk.RemovalPolicy.RETAIN
        return _REMOVAL_POLICIES[self.removal_policy_name]

    @property
    def database_removal_policy(self) -> cdk.RemovalPolicy:
        """The database keeps a final snapshot unless the environment is disposable (destroy)."""
        if self.removal_policy_name == "destroy":
            return cdk.RemovalPolicy.DESTROY
        return cdk.RemovalPolicy.SNAPSHOT

    @property
    def destroy_on_delete(self) -> bool:
        return self.removal_policy_name == "destroy"

    @property
    def name_prefix(self) -> str:
        return f"healthtech-etl-{self.env}"

    @property
    def stack_name(self) -> str:
        """One CloudFormation stack per environment: deploying prod never touches dev."""
        return f"{STACK_NAME_PREFIX}{self.env}"

    @classmethod
    def from_context(cls, try_get: Callable[[str], Any]) -> EtlConfig:
        """Read and check every setting; a bad one raises ConfigError with a one-line reason."""
        env = str(try_get("env") or "dev").strip().lower()
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,15}", env):
            raise ConfigError(f"context env={env!r}: use a short lower-case name such as dev or prod")
        prod = env == "prod"
        ctx = _Context(try_get)
        alert_email = str(ctx.pick("alertEmail", "")).strip()
        if alert_email and not _EMAIL.match(alert_email):
            raise ConfigError(f"context alertEmail={alert_email!r} is not an e-mail address")
        if prod and not alert_email:
            raise ConfigError(
                "context alertEmail is required for env=prod (failures and alarms must reach someone): "
                'add -c alertEmail=ops@example.org, e.g. make deploy CONTEXT="-c env=prod -c alertEmail=ops@example.org"'
            )
        instance_class = str(ctx.pick("dbInstanceClass", "t4g.micro")).strip()
        instance_class = instance_class[3:] if instance_class.startswith("db.") else instance_class
        removal = str(ctx.pick("removalPolicy", "retain" if prod else "destroy")).strip().lower()
        if removal not in _REMOVAL_POLICIES:
            raise ConfigError(f"context removalPolicy={removal!r}: one of {sorted(_REMOVAL_POLICIES)}")
        reserved = ctx.number("triggerReservedConcurrency", None, "at least 1 (or empty for none)", minimum=1)
        ca_bundle = Path(str(ctx.pick("rdsCaBundle", RDS_CA_BUNDLE_PATH)))
        load_mode = str(ctx.pick("loadMode", "replace")).strip().lower()
        if load_mode not in ("replace", "merge"):
            raise ConfigError(f"context loadMode={load_mode!r}: replace or merge")
        return cls(
            partner_wait_minutes=ctx.number("partnerWaitMinutes", 60, "1 to 1440", minimum=1, maximum=1440),
            large_input_mb=ctx.number("largeInputMb", DEFAULT_LARGE_INPUT_MB, "at least 1", minimum=1),
            endpoint_azs=ctx.number("endpointAzs", 1, "1 (the job's AZ) or 2", minimum=1, maximum=2),
            trigger_reserved_concurrency=reserved,
            rds_ca_bundle=ca_bundle if ca_bundle.is_absolute() else REPO_ROOT / ca_bundle,
            env=env,
            alert_email=alert_email,
            db_instance_class=instance_class,
            removal_policy_name=removal,
            multi_az=_bool(ctx.pick("multiAz", prod)),
            deletion_protection=_bool(ctx.pick("deletionProtection", prod)),
            backup_retention_days=ctx.number("backupRetentionDays", 30 if prod else 7, "0 to 35", 0, 35),
            log_retention_days=ctx.number("logRetentionDays", 365 if prod else 30, "days", minimum=1),
            glue_timeout_minutes=ctx.number("glueTimeoutMinutes", 60, "at least 1", minimum=1),
            state_machine_timeout_minutes=ctx.number("stateMachineTimeoutMinutes", 180, "at least 1", minimum=1),
            load_mode=load_mode,
            glue_max_concurrent_runs=ctx.number("glueMaxConcurrentRuns", 10, "1 to 1000", minimum=1, maximum=1000),
            backfill_concurrency=ctx.number("backfillConcurrency", 10, "1 to 1000", minimum=1, maximum=1000),
        )


class _Context:
    """Context values as the CLI passes them (strings) or cdk.json holds them; empty means default."""

    def __init__(self, try_get: Callable[[str], Any]) -> None:
        self.try_get = try_get

    def pick(self, key: str, default: Any) -> Any:
        value = self.try_get(key)
        return default if value is None or value == "" else value

    def number(
        self, key: str, default: int | None, allowed: str, minimum: int = 0, maximum: int | None = None
    ) -> int | None:
        value = self.pick(key, default)
        if value is None:
            return None
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigError(f"context {key}={value!r}: a whole number, {allowed}") from None
        if number < minimum or (maximum is not None and number > maximum):
            raise ConfigError(f"context {key}={number}: {allowed}")
        return number


def stack_unique(name: str) -> str:
    """`name-<8 hex digits of this stack's id>`: stable for the life of a stack, new for every stack
    created again. For physical names of resources a teardown retains (log groups whose name is fixed
    by the service, such as RDS's): a redeploy after `destroy` must not collide with the retained one."""
    stack_uuid = Fn.select(2, Fn.split("/", Aws.STACK_ID))
    return f"{name}-{Fn.select(0, Fn.split('-', stack_uuid))}"


def find_wheel(dist_dir: Path = DIST_DIR) -> Path:
    """The wheel `make build-glue` put in dist/ (the newest one if several versions are there)."""
    wheels = sorted(dist_dir.glob(WHEEL_GLOB), key=lambda p: (p.stat().st_mtime, p.name))
    if not wheels:
        raise FileNotFoundError(
            f"no {WHEEL_GLOB} in {dist_dir}: run `make build-glue` (or `python -m build --wheel "
            "--outdir dist .` from the repository root) before synth"
        )
    return wheels[-1]


def find_library_wheels(stage_dir: Path = GLUE_STAGE_DIR) -> list[Path]:
    """The library wheels `make build-glue` staged for the job's --extra-py-files (python-calamine and
    packaging, the pins of glue_job/requirements.txt), in install order."""
    import importlib.util
    import sys

    if "glue_wheels" not in sys.modules:
        spec = importlib.util.spec_from_file_location("glue_wheels", GLUE_WHEELS_MODULE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["glue_wheels"] = module
        spec.loader.exec_module(module)
    glue_wheels = sys.modules["glue_wheels"]
    try:
        return list(glue_wheels.staged(stage_dir))
    except glue_wheels.WheelError as exc:
        raise FileNotFoundError(str(exc)) from None


def retention(days: int):
    """CloudWatch Logs retention enum for a number of days (only the values CloudWatch accepts)."""
    from aws_cdk import aws_logs as logs

    table = {
        7: logs.RetentionDays.ONE_WEEK,
        14: logs.RetentionDays.TWO_WEEKS,
        30: logs.RetentionDays.ONE_MONTH,
        60: logs.RetentionDays.TWO_MONTHS,
        90: logs.RetentionDays.THREE_MONTHS,
        180: logs.RetentionDays.SIX_MONTHS,
        365: logs.RetentionDays.ONE_YEAR,
        731: logs.RetentionDays.TWO_YEARS,
        1827: logs.RetentionDays.FIVE_YEARS,
        3653: logs.RetentionDays.TEN_YEARS,
    }
    if days not in table:
        raise ConfigError(f"context logRetentionDays={days}: one of {sorted(table)}")
    return table[days]
