"""CDK test fixtures: the app is synthesized through the Python API (no npm, no AWS account).

jsii is slow on small machines, so the default (dev) app is synthesized ONCE per session (``synth``)
and every other context once per module that needs it; template helpers for the assertions.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The CDK's Python library (aws-cdk-lib) runs on Node.js (jsii): without both, every module of this
# folder is reported skipped with this reason instead of failing at its first `import aws_cdk`.
MISSING = [name for name, absent in (
    ("Node.js (node on PATH)", shutil.which(os.environ.get("JSII_NODE", "node")) is None),
    ("aws-cdk-lib (make install-dev)", importlib.util.find_spec("aws_cdk") is None)) if absent]
SKIP_REASON = f"tests/infra needs {' and '.join(MISSING)}: not installed"


class _Skipped(pytest.Item):
    def runtest(self) -> None:
        pytest.skip(SKIP_REASON)


class _WithoutToolchain(pytest.Module):
    """A test module left unimported: one skipped test stands for it (so `make test-infra` passes)."""

    def collect(self) -> list[Any]:
        return [_Skipped.from_parent(self, name="all")]


def pytest_pycollect_makemodule(module_path: Path, parent: Any) -> Any:
    return _WithoutToolchain.from_parent(parent, path=module_path) if MISSING else None

# Before aws_cdk starts its Node.js runtime: Node 20 works, just without the banner.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))


def ensure_wheel() -> Path:
    """dist/healthtech_etl-*.whl and the library wheels staged in dist/glue/, built with
    scripts/build-glue.sh if `make build-glue` has not run."""
    from healthtech_infra.config import DIST_DIR, WHEEL_GLOB, find_library_wheels

    try:
        find_library_wheels()
        staged = True
    except FileNotFoundError:
        staged = False
    if not list(DIST_DIR.glob(WHEEL_GLOB)) or not staged:
        subprocess.run(
            ["bash", str(REPO / "scripts" / "build-glue.sh")],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHON": sys.executable},
        )
    wheels = sorted(DIST_DIR.glob(WHEEL_GLOB))
    assert wheels, f"building the wheel left no {WHEEL_GLOB} in {DIST_DIR}"
    return wheels[-1]


@pytest.fixture(scope="session")
def glue_wheel() -> Path:
    return ensure_wheel()


@pytest.fixture(scope="session")
def glue_libraries(glue_wheel: Path) -> list[Path]:
    """The job's library wheels in dist/glue/ (packaging, python-calamine), in install order."""
    from healthtech_infra.config import find_library_wheels

    return find_library_wheels()


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

    def etl_job(self) -> tuple[str, dict[str, Any]]:
        """The ETL Glue job (the stack's other Glue jobs, db-setup and ops, are in test_access.py)."""
        found = {k: v for k, v in self.resources("AWS::Glue::Job").items() if k.startswith("EtlJob")}
        assert len(found) == 1, f"expected one ETL Glue job, found {sorted(found)}"
        return next(iter(found.items()))

    def etl_state_machine(self) -> tuple[str, dict[str, Any]]:
        """The upload workflow's state machine (the backfill's is in test_backfill.py)."""
        found = {k: v for k, v in self.resources("AWS::StepFunctions::StateMachine").items()
                 if k.startswith("Orchestration")}
        assert len(found) == 1, f"expected one ETL state machine, found {sorted(found)}"
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


FAKE_CA_BUNDLE = "-----BEGIN CERTIFICATE-----\nTUlJQ2Zha2U=\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="session")
def ca_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands in for the AWS bundle `make deploy` downloads (tests are offline)."""
    path = tmp_path_factory.mktemp("rds-ca") / "global-bundle.pem"
    path.write_text(FAKE_CA_BUNDLE, encoding="ascii")
    return path


@pytest.fixture(scope="session")
def synth(glue_wheel: Path, ca_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """The default (dev) app, with a CA bundle to deploy."""
    return synthesize({"rdsCaBundle": str(ca_bundle)}, tmp_path_factory.mktemp("cdk-dev"))


# --------------------------------------------------------------------------- template helpers


def ref(logical_id: str) -> dict[str, str]:
    return {"Ref": logical_id}


def get_att(logical_id: str, attribute: str = "Arn") -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def find_id(synth: Synth, resource_type: str, fragment: str) -> str:
    matches = [k for k in synth.resources(resource_type) if fragment in k]
    assert len(matches) == 1, f"{resource_type} with {fragment!r} in its id: {matches}"
    return matches[0]


def statements_of_role(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    """Every statement of every inline policy and AWS::IAM::Policy attached to a role."""
    statements: list[dict[str, Any]] = []
    role = synth.template["Resources"][role_id]["Properties"]
    for policy in role.get("Policies", []):
        statements += policy["PolicyDocument"]["Statement"]
    for policy in synth.resources("AWS::IAM::Policy").values():
        if ref(role_id) in policy["Properties"].get("Roles", []):
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def actions_of(statements: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements for a in as_list(s["Action"])}


def role_of_function(synth: Synth, function_id: str) -> str:
    return synth.template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]


def bucket_ids(synth: Synth) -> dict[str, str]:
    return {
        name: find_id(synth, "AWS::S3::Bucket", name)
        for name in ("StorageRawBucket", "StorageArtifactsBucket", "StorageAccessLogsBucket")
    }


# --------------------------------------------------------------------------- physical names

# The property that holds a resource's own physical name (other *Name properties refer to others).
PHYSICAL_NAME = {
    "AWS::RDS::DBInstance": "DBInstanceIdentifier",
    "AWS::RDS::DBParameterGroup": "DBParameterGroupName",
    "AWS::RDS::DBSubnetGroup": "DBSubnetGroupName",
    "AWS::SecretsManager::Secret": "Name",
    "AWS::SNS::Topic": "TopicName",
    "AWS::SQS::Queue": "QueueName",
    "AWS::Glue::Job": "Name",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::CloudWatch::Alarm": "AlarmName",
    "AWS::CloudWatch::Dashboard": "DashboardName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::Role": "RoleName",
    "AWS::KMS::Alias": "AliasName",
    "AWS::EC2::SecurityGroup": "GroupName",
}


def render_name(value: Any) -> str:
    """A name as text: Fn::Join joined, any other intrinsic (e.g. the stack-id suffix) as <token>."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        delimiter, parts = value["Fn::Join"]
        return delimiter.join(render_name(part) for part in parts)
    return "<token>"


def physical_names(synth: Synth) -> dict[str, tuple[str, Any]]:
    """logical id -> (resource type, raw name value) of every resource the template names itself."""
    names: dict[str, tuple[str, Any]] = {}
    for logical_id, resource in synth.template["Resources"].items():
        props = resource.get("Properties", {})
        value = props.get(PHYSICAL_NAME.get(resource["Type"], ""))
        if resource["Type"] == "AWS::Glue::Connection":
            value = props["ConnectionInput"].get("Name")
        if value is not None:
            names[logical_id] = (resource["Type"], value)
    return names
