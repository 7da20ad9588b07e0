"""AWS CDK v2 app for healthtech-etl: one stack per environment (HealthTechEtl-<env>), one construct
module per concern."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from .config import STACK_NAME_PREFIX, ConfigError, EtlConfig
from .nag import acknowledge_findings
from .stack import HealthTechEtlStack

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"

__all__ = [
    "STACK_NAME_PREFIX",
    "ConfigError",
    "EtlConfig",
    "HealthTechEtlStack",
    "build_app",
    "cdk_json_context",
]


def cdk_json_context() -> dict[str, Any]:
    """The `context` block of infra/cdk.json (the CLI passes it by itself; tests pass it with this)."""
    return dict(json.loads(CDK_JSON.read_text(encoding="utf-8")).get("context", {}))


def build_app(
    context: dict[str, Any] | None = None, outdir: str | None = None, nag: bool = True
) -> tuple[cdk.App, HealthTechEtlStack]:
    """The CDK app with the stack of one environment, `HealthTechEtl-<env>` (context `env`), and
    the cdk-nag AwsSolutions checks (findings fail synth). A bad setting raises ConfigError.

    cdk.json's context (settings and feature flags) is always the base, `context` goes over it
    (tests); values the CDK CLI passes (`-c key=value`) take precedence over both.
    """
    props: dict[str, Any] = {"context": {**cdk_json_context(), **(context or {})}}
    if outdir is not None:
        props["outdir"] = outdir
    app = cdk.App(**props)
    config = EtlConfig.from_context(app.node.try_get_context)
    stack = HealthTechEtlStack(
        app,
        config.stack_name,
        config=config,
        description=f"healthtech-etl ({config.env}): S3 -> Lambda -> Step Functions -> Glue -> RDS PostgreSQL",
        # Environment-agnostic on purpose: synth never looks anything up in an account.
        synthesizer=cdk.DefaultStackSynthesizer(generate_bootstrap_version_rule=True),
    )
    if nag:
        cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    acknowledge_findings(stack)
    return app, stack
