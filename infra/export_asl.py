#!/usr/bin/env python3
"""Export the ETL state machine's ASL, as CDK synthesizes it, to infra/asl/etl_state_machine.asl.json.

The moto chain test (tests/aws) loads that file and substitutes the placeholders, so it runs
exactly the workflow CDK deploys; tests/infra checks the committed file against a fresh synth.

Placeholders (CloudFormation tokens in the DefinitionString's Fn::Join):
  ${GlueJobName}   Ref to the AWS::Glue::Job
  ${AlertTopicArn} Ref to the AWS::SNS::Topic
  ${ReportBucketName}          Ref to the AWS::S3::Bucket (the artifacts/reports bucket)
  ${ResolveInputsFunctionArn}  GetAtt Arn of the AWS::Lambda::Function (lambda/resolve_inputs.py)
  ${Partition}     Ref AWS::Partition ("aws"); likewise ${Region}, ${AccountId}, ${UrlSuffix}
  any other Ref/GetAtt becomes ${<LogicalId>} or ${<LogicalId>.<Attribute>}

Usage (from the repository root or infra/):  python infra/export_asl.py [--check]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

INFRA_DIR = Path(__file__).resolve().parent
ASL_FILE = INFRA_DIR / "asl" / "etl_state_machine.asl.json"

REF_PLACEHOLDERS_BY_TYPE = {
    "AWS::Glue::Job": "GlueJobName",
    "AWS::SNS::Topic": "AlertTopicArn",
    "AWS::S3::Bucket": "ReportBucketName",
}
GETATT_PLACEHOLDERS_BY_TYPE = {
    ("AWS::Lambda::Function", "Arn"): "ResolveInputsFunctionArn",
}
PSEUDO_PARAMETERS = {
    "AWS::Partition": "Partition",
    "AWS::Region": "Region",
    "AWS::AccountId": "AccountId",
    "AWS::URLSuffix": "UrlSuffix",
}


def _placeholder(token: dict[str, Any], resources: dict[str, Any]) -> str:
    if set(token) == {"Ref"}:
        name = token["Ref"]
        if name in PSEUDO_PARAMETERS:
            return "${" + PSEUDO_PARAMETERS[name] + "}"
        resource_type = resources.get(name, {}).get("Type")
        return "${" + REF_PLACEHOLDERS_BY_TYPE.get(resource_type, name) + "}"
    if set(token) == {"Fn::GetAtt"}:
        logical_id, attribute = token["Fn::GetAtt"]
        resource_type = resources.get(logical_id, {}).get("Type")
        named = GETATT_PLACEHOLDERS_BY_TYPE.get((resource_type, attribute))
        return "${" + (named or f"{logical_id}.{attribute}") + "}"
    raise ValueError(f"unexpected token in the state machine definition: {token!r}")


def state_machine_resource(template: dict[str, Any], construct: str) -> dict[str, Any]:
    """The state machine of one construct (logical ids start with the construct's id)."""
    machines = [r for logical_id, r in template["Resources"].items()
                if r["Type"] == "AWS::StepFunctions::StateMachine" and logical_id.startswith(construct)]
    if len(machines) != 1:
        raise ValueError(f"expected exactly one {construct} state machine in the template, found {len(machines)}")
    return machines[0]


def definition_asl(
    template: dict[str, Any], construct: str, placeholder: Callable[[dict[str, Any], dict[str, Any]], str]
) -> dict[str, Any]:
    """The definition of ``construct``'s state machine, each token replaced by ``placeholder(token, resources)``."""
    definition = state_machine_resource(template, construct)["Properties"]["DefinitionString"]
    if isinstance(definition, str):
        return json.loads(definition)
    delimiter, parts = definition["Fn::Join"]
    resources = template["Resources"]
    return json.loads(delimiter.join(part if isinstance(part, str) else placeholder(part, resources) for part in parts))


def synthesized_asl(template: dict[str, Any], construct: str = "Orchestration") -> dict[str, Any]:
    """The state machine definition of a synthesized template, tokens replaced by ${Name} placeholders."""
    return definition_asl(template, construct, _placeholder)


def render(asl: dict[str, Any]) -> str:
    return json.dumps(asl, indent=2) + "\n"


def synthesize_template(*, nag: bool = True) -> dict[str, Any]:
    """Synthesize the stack with the default (cdk.json) context, offline, and return its template."""
    sys.path.insert(0, str(INFRA_DIR))
    from aws_cdk.assertions import Template
    from healthtech_infra import build_app

    _, stack = build_app(context={}, nag=nag)
    return Template.from_stack(stack).to_json()


def write_or_check(asl: dict[str, Any], asl_file: Path, script: str, argv: list[str]) -> int:
    """Write ``asl`` to ``asl_file``; with --check only compare (1 and a line on stderr when stale)."""
    if "--check" in argv:
        current = json.loads(asl_file.read_text(encoding="utf-8")) if asl_file.exists() else None
        if current != asl:
            print(f"{asl_file} is stale: run `python {script}`", file=sys.stderr)
            return 1
        print(f"{asl_file} is up to date")
        return 0
    asl_file.parent.mkdir(parents=True, exist_ok=True)
    asl_file.write_text(render(asl), encoding="utf-8")
    print(f"wrote {asl_file}")
    return 0


def main(argv: list[str]) -> int:
    return write_or_check(synthesized_asl(synthesize_template()), ASL_FILE, "infra/export_asl.py", argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
