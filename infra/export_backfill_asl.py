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

import sys
from pathlib import Path
from typing import Any

from export_asl import definition_asl, synthesize_template, write_or_check

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
    return definition_asl(template, CONSTRUCT, _placeholder)


def main(argv: list[str]) -> int:
    # cdk-nag is checked by tests/infra, not needed here.
    asl = synthesized_backfill_asl(synthesize_template(nag=False))
    return write_or_check(asl, ASL_FILE, "infra/export_backfill_asl.py", argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
