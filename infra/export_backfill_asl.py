#!/usr/bin/env python3
"""Export the backfill state machine's ASL, as CDK synthesizes it, to infra/asl/backfill_state_machine.asl.json.

The moto backfill test (tests/aws/test_backfill.py) loads that file and fills in the placeholders,
so it runs exactly the workflow CDK deploys; tests/infra/test_backfill.py checks the committed
file against a fresh synth.

Placeholders (CloudFormation tokens in the DefinitionString's Fn::Join):
  ${GlueJobName}              Ref to the AWS::Glue::Job
  ${AlertTopicArn}            Ref to the AWS::SNS::Topic
  ${PlanBackfillFunctionArn}  GetAtt Arn of the AWS::Lambda::Function (lambda/backfill_plan.py)
  ${Partition}                Ref AWS::Partition ("aws"); likewise ${Region}, ${AccountId}
Any other token is an error (the definition must not grow a dependency the test does not fill in).

Usage (from the repository root or infra/):  python infra/export_backfill_asl.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

INFRA_DIR = Path(__file__).resolve().parent
ASL_FILE = INFRA_DIR / "asl" / "backfill_state_machine.asl.json"
CONSTRUCT = "Backfill"  # logical ids of the construct's resources start with its id
PLACEHOLDERS = {
    ("Ref", "AWS::Glue::Job"): "GlueJobName",
    ("Ref", "AWS::SNS::Topic"): "AlertTopicArn",
    ("Arn", "AWS::Lambda::Function"): "PlanBackfillFunctionArn",
}
PSEUDO_PARAMETERS = {"AWS::Partition": "Partition", "AWS::Region": "Region", "AWS::AccountId": "AccountId"}


def _placeholder(token: dict[str, Any], resources: dict[str, Any]) -> str:
    if set(token) == {"Ref"} and token["Ref"] in PSEUDO_PARAMETERS:
        return "${" + PSEUDO_PARAMETERS[token["Ref"]] + "}"
    if set(token) == {"Ref"}:
        kind, logical_id = "Ref", token["Ref"]
    elif set(token) == {"Fn::GetAtt"}:
        logical_id, kind = token["Fn::GetAtt"]
    else:
        raise ValueError(f"unexpected token in the backfill definition: {token!r}")
    name = PLACEHOLDERS.get((kind, resources.get(logical_id, {}).get("Type")))
    if name is None:
        raise ValueError(f"unexpected reference in the backfill definition: {token!r}")
    return "${" + name + "}"


def synthesized_backfill_asl(template: dict[str, Any]) -> dict[str, Any]:
    """The backfill definition of a synthesized template, tokens replaced by ${Name} placeholders."""
    resources = template["Resources"]
    machines = [r for logical_id, r in resources.items()
                if r["Type"] == "AWS::StepFunctions::StateMachine" and logical_id.startswith(CONSTRUCT)]
    if len(machines) != 1:
        raise ValueError(f"expected exactly one {CONSTRUCT} state machine in the template, found {len(machines)}")
    definition = machines[0]["Properties"]["DefinitionString"]
    if isinstance(definition, str):
        return json.loads(definition)
    delimiter, parts = definition["Fn::Join"]
    return json.loads(delimiter.join(p if isinstance(p, str) else _placeholder(p, resources) for p in parts))


def synthesize_template() -> dict[str, Any]:
    """Synthesize the stack with the default (cdk.json) context, offline, and return its template."""
    sys.path.insert(0, str(INFRA_DIR))
    from aws_cdk.assertions import Template
    from healthtech_infra import build_app

    _, stack = build_app(context={}, nag=False)  # cdk-nag is checked by tests/infra, not needed here
    return Template.from_stack(stack).to_json()


def main(argv: list[str]) -> int:
    asl = synthesized_backfill_asl(synthesize_template())
    if "--check" in argv:
        current = json.loads(ASL_FILE.read_text(encoding="utf-8")) if ASL_FILE.exists() else None
        if current != asl:
            print(f"{ASL_FILE} is stale: run `python infra/export_backfill_asl.py`", file=sys.stderr)
            return 1
        print(f"{ASL_FILE} is up to date")
        return 0
    ASL_FILE.parent.mkdir(parents=True, exist_ok=True)
    ASL_FILE.write_text(json.dumps(asl, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {ASL_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
