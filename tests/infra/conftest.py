"""CDK test fixtures: the app is synthesized through the Python API (no npm, no AWS account).

jsii is slow on small machines, so each test module synthesizes ONCE (module-scoped fixtures).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Before aws_cdk starts its Node.js runtime: Node 20 works, just without the banner.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))


def ensure_wheel() -> Path:
    """dist/healthtech_etl-*.whl, built from the repository if `make build-glue` has not run."""
    from healthtech_infra.config import DIST_DIR, WHEEL_GLOB

    if not list(DIST_DIR.glob(WHEEL_GLOB)):
        subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(DIST_DIR), str(REPO)],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    wheels = sorted(DIST_DIR.glob(WHEEL_GLOB))
    assert wheels, f"building the wheel left no {WHEEL_GLOB} in {DIST_DIR}"
    return wheels[-1]


@pytest.fixture(scope="session")
def glue_wheel() -> Path:
    return ensure_wheel()


@dataclass
class Synth:
    """One synthesized app: the stack, its template (dict and assertions.Template), the assembly dir."""

    stack: Any
    template: dict[str, Any]
    assertions: Any
    outdir: Path
    acknowledged: list[tuple[str, str, str]]

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == resource_type}

    def one(self, resource_type: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(resource_type)
        assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
        return next(iter(found.items()))

    def logical_id(self, construct: Any) -> str:
        return self.stack.get_logical_id(construct.node.default_child)


def synthesize(context: dict[str, Any], outdir: Path) -> Synth:
    """Synthesize the real app (cdk-nag included: an unacknowledged finding raises here)."""
    from aws_cdk.assertions import Template
    from healthtech_infra import build_app
    from healthtech_infra.nag import ACKNOWLEDGED

    app, stack = build_app(context, outdir=str(outdir))
    assembly = app.synth()
    template = assembly.get_stack_by_name(stack.stack_name).template
    return Synth(
        stack=stack,
        template=template,
        assertions=Template.from_json(template),
        outdir=outdir,
        acknowledged=list(ACKNOWLEDGED),
    )
