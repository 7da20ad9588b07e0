"""The prod switches (context env=prod), dev and prod side by side, and the context validation.

One more synth for prod (module fixture); the dev app is the session's `synth`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import INFRA, Synth, find_id, physical_names, render_name, synthesize
from healthtech_infra.config import ConfigError, EtlConfig

PROD_CONTEXT = {
    "env": "prod",
    "alertEmail": "oncall@example.org",
    "dbInstanceClass": "db.m7g.large",
    "endpointAzs": "2",
    "partnerWaitMinutes": "30",
    "largeInputMb": "8",
    "triggerReservedConcurrency": "3",
}


@pytest.fixture(scope="module")
def prod(glue_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    # No CA bundle downloaded (as in an offline checkout): synth still works, see below.
    missing = tmp_path_factory.mktemp("no-ca") / "global-bundle.pem"
    return synthesize({**PROD_CONTEXT, "rdsCaBundle": str(missing)}, tmp_path_factory.mktemp("cdk-prod"))


def test_without_a_downloaded_ca_bundle_synth_deploys_only_wheels_and_script(
    prod: Synth, glue_wheel: Path, glue_libraries: list[Path]
) -> None:
    _, deployment = prod.one("Custom::CDKBucketDeployment")
    keys = deployment["Properties"]["SourceObjectKeys"]
    staged = [sorted(p.name for p in (prod.outdir / f"asset.{key.removesuffix('.zip')}").iterdir()) for key in keys]
    assert staged == [[glue_wheel.name], ["db_access.py", "glue_etl.py"]] + [[wheel.name] for wheel in glue_libraries]
    # The job still verifies RDS against the bundle's fixed key (scripts/cdk.sh deploy puts it there).
    _, job = prod.etl_job()
    assert job["Properties"]["DefaultArguments"]["--DB_SSLMODE"] == "verify-full"


def test_endpoint_azs_and_pairing_knobs_reach_the_template(prod: Synth) -> None:
    subnets = sorted(prod.resources("AWS::EC2::Subnet"))
    for endpoint in prod.resources("AWS::EC2::VPCEndpoint").values():
        if endpoint["Properties"].get("VpcEndpointType") == "Interface":
            assert sorted(s["Ref"] for s in endpoint["Properties"]["SubnetIds"]) == subnets
    env = {
        k: v["Properties"].get("Environment", {}).get("Variables", {})
        for k, v in prod.resources("AWS::Lambda::Function").items()
    }
    (trigger,) = [v for k, v in env.items() if "TriggerFunction" in k]
    (resolver,) = [v for k, v in env.items() if "ResolverFunction" in k]
    assert trigger["PARTNER_WAIT_SECONDS"] == "1800"
    assert resolver["LARGE_INPUT_BYTES"] == str(8 * 1024 * 1024)


def test_reserved_concurrency_is_only_set_when_the_context_asks_for_it(prod: Synth, synth: Synth) -> None:
    def reserved(app: Synth) -> object:
        (trigger,) = [v for k, v in app.resources("AWS::Lambda::Function").items() if "TriggerFunction" in k]
        return trigger["Properties"].get("ReservedConcurrentExecutions")

    assert reserved(prod) == 3  # -c triggerReservedConcurrency=3
    assert reserved(synth) is None  # default: none (a new account's quota of 10 has none to spare)


def test_prod_alarm_names_match_the_topic_policy_pattern(prod: Synth) -> None:
    _, policy = prod.one("AWS::SNS::TopicPolicy")
    (allow,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allow["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Join"][1][-1] == ":alarm:healthtech-etl-prod-*"
    for alarm in prod.resources("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmName"].startswith("healthtech-etl-prod-")


def test_prod_database_is_multi_az_protected_and_snapshotted(prod: Synth) -> None:
    _, db = prod.one("AWS::RDS::DBInstance")
    props = db["Properties"]
    assert props["MultiAZ"] is True
    assert props["DeletionProtection"] is True
    assert props["BackupRetentionPeriod"] >= 30
    assert props["DBInstanceClass"] == "db.m7g.large"
    assert render_name(props["DBInstanceIdentifier"]) == "healthtech-etl-prod-<token>"
    assert db["DeletionPolicy"] == "Snapshot"


def test_prod_keeps_data_when_the_stack_is_deleted(prod: Synth) -> None:
    for resource_type in ("AWS::S3::Bucket", "AWS::KMS::Key", "AWS::Logs::LogGroup"):
        for logical_id, resource in prod.resources(resource_type).items():
            assert resource["DeletionPolicy"] == "Retain", logical_id
    prod.assertions.resource_count_is("Custom::S3AutoDeleteObjects", 0)


def test_prod_subscribes_the_alert_email(prod: Synth) -> None:
    topic_id, _ = prod.one("AWS::SNS::Topic")
    prod.assertions.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "oncall@example.org", "TopicArn": {"Ref": topic_id}},
    )


def test_prod_needs_no_multi_az_or_deletion_protection_acknowledgement(prod: Synth) -> None:
    rules = {rule for _, rule, _ in prod.acknowledged}
    assert "AwsSolutions-RDS3" not in rules and "AwsSolutions-RDS10" not in rules
    assert "AwsSolutions-RDS11" in rules  # still synthesized with cdk-nag


def test_names_carry_the_environment(prod: Synth) -> None:
    _, job = prod.etl_job()
    _, machine = prod.etl_state_machine()
    assert job["Properties"]["Name"] == "healthtech-etl-prod"
    assert machine["Properties"]["StateMachineName"] == "healthtech-etl-prod"
    backfill = prod.template["Resources"][find_id(prod, "AWS::StepFunctions::StateMachine", "Backfill")]
    assert backfill["Properties"]["StateMachineName"] == "healthtech-etl-prod-backfill"


# --------------------------------------------------------------------------- dev and prod side by side


def test_dev_and_prod_are_separate_stacks_whose_physical_names_never_collide(prod: Synth, synth: Synth) -> None:
    """Deploying prod where dev runs must create a second stack, not update (and replace) dev's."""
    assert (synth.stack.stack_name, prod.stack.stack_name) == ("HealthTechEtl-dev", "HealthTechEtl-prod")
    names = {}
    for env, app in (("dev", synth), ("prod", prod)):
        rendered = {logical_id: render_name(value) for logical_id, (_, value) in physical_names(app).items()}
        for logical_id, name in rendered.items():
            assert f"healthtech-etl-{env}" in name, (env, logical_id, name)
        names[env] = set(rendered.values())
        named_types = {resource_type for resource_type, _ in physical_names(app).values()}
        assert named_types >= {
            "AWS::RDS::DBInstance", "AWS::SecretsManager::Secret", "AWS::SNS::Topic", "AWS::SQS::Queue",
            "AWS::Glue::Job", "AWS::Lambda::Function", "AWS::StepFunctions::StateMachine",
            "AWS::Logs::LogGroup", "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard",
            "AWS::IAM::ManagedPolicy",
        }, named_types  # fmt: skip
        assert len(rendered) >= 20
    # Compared without the stack-id suffix (<token>): the environment alone keeps them apart.
    assert names["dev"].isdisjoint(names["prod"]), names["dev"] & names["prod"]
    # No other property sets a fixed name (the known ones are checked above).
    other = {
        (app.stack.stack_name, logical_id, key)
        for app in (synth, prod)
        for logical_id, resource in app.template["Resources"].items()
        for key, value in resource.get("Properties", {}).items()
        if key.endswith(("Name", "Identifier")) and isinstance(value, str)
        and logical_id not in physical_names(app)
        and key not in ("PolicyName", "DisplayName", "MetricName", "DBName")  # not account-wide names
    }
    assert not other, other


def test_retained_resources_have_no_name_a_redeploy_would_collide_with(prod: Synth) -> None:
    """prod retains log groups on destroy; the next stack must be able to create its own."""
    names = physical_names(prod)
    retained = {k: v for k, v in prod.template["Resources"].items() if v.get("DeletionPolicy") == "Retain"}
    assert {v["Type"] for v in retained.values()} >= {"AWS::Logs::LogGroup", "AWS::S3::Bucket", "AWS::KMS::Key"}
    named = {k: names[k][1] for k in retained if k in names}
    assert len(named) >= 5, named  # the Glue job's, the Lambdas', the state machine's and RDS's groups
    for logical_id, value in named.items():
        # Generated by CloudFormation, or carrying this stack's id (new for every stack created).
        assert not isinstance(value, str) and "AWS::StackId" in json.dumps(value), (logical_id, value)
    # RDS names its log group after the instance: so the instance identifier is the unique one.
    _, db = prod.one("AWS::RDS::DBInstance")
    identifier = db["Properties"]["DBInstanceIdentifier"]
    assert "AWS::StackId" in json.dumps(identifier)
    (db_logs,) = [v for v in named.values() if render_name(v).startswith("/aws/rds/instance/")]
    assert render_name(db_logs) == f"/aws/rds/instance/{render_name(identifier)}/postgresql"
    for token in [part for part in identifier["Fn::Join"][1] if not isinstance(part, str)]:
        assert json.dumps(token) in json.dumps(db_logs)  # the same stack-id suffix


# --------------------------------------------------------------------------- context parsing (no synth)


def config(**context: object) -> EtlConfig:
    return EtlConfig.from_context(context.get)


def test_dev_defaults_are_cheap_and_disposable() -> None:
    c = config()
    assert (c.env, c.multi_az, c.deletion_protection, c.removal_policy_name) == (
        "dev",
        False,
        False,
        "destroy",
    )
    assert c.db_instance_class == "t4g.micro"


def test_prod_defaults_are_safe_and_explicit_context_wins() -> None:
    c = config(env="prod", alertEmail="oncall@example.org")
    assert (c.multi_az, c.deletion_protection, c.removal_policy_name) == (True, True, "retain")
    c = config(env="prod", alertEmail="oncall@example.org", multiAz="false", removalPolicy="snapshot")
    assert c.multi_az is False and c.removal_policy_name == "snapshot"
    assert c.stack_name == "HealthTechEtl-prod" and config().stack_name == "HealthTechEtl-dev"


def test_prod_requires_an_alert_email() -> None:
    for context in ({"env": "prod"}, {"env": "prod", "alertEmail": " "}):
        with pytest.raises(ConfigError, match=r"^context alertEmail is required for env=prod .*-c alertEmail="):
            config(**context)
    assert config(env="staging").alert_email == ""  # only prod insists


def test_synth_of_prod_without_alert_email_fails_with_one_line_exit_2() -> None:
    """What `make synth|deploy CONTEXT="-c env=prod"` shows: the app's one line, nothing synthesized."""
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({"env": "prod"}), "CDK_OUTDIR": "/nonexistent/out"}
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=INFRA, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("app.py: context alertEmail is required for env=prod"), lines
    assert "Traceback" not in result.stderr


def test_new_knobs_have_documented_defaults_and_accept_overrides() -> None:
    c = config()
    assert (c.partner_wait_minutes, c.large_input_mb, c.endpoint_azs, c.trigger_reserved_concurrency) == (60, 16, 1, None)
    assert c.rds_ca_bundle.name == "global-bundle.pem" and c.rds_ca_bundle.is_absolute()
    c = config(partnerWaitMinutes="1", largeInputMb="64", endpointAzs="2", triggerReservedConcurrency="2")
    assert (c.partner_wait_minutes, c.large_input_mb, c.endpoint_azs, c.trigger_reserved_concurrency) == (1, 64, 2, 2)


@pytest.mark.parametrize(
    "context",
    [
        {"alertEmail": "not-an-address"},
        {"removalPolicy": "keep"},
        {"env": "Prod Env"},
        {"logRetentionDays": "10"},
        {"partnerWaitMinutes": "0"},
        {"partnerWaitMinutes": "7200"},
        {"largeInputMb": "0"},
        {"endpointAzs": "3"},
        {"triggerReservedConcurrency": "0"},
        {"triggerReservedConcurrency": "many"},
        {"partnerWaitMinutes": "soon"},
    ],
)
def test_invalid_context_is_rejected(context: dict[str, str]) -> None:
    from healthtech_infra.config import retention

    with pytest.raises(ConfigError) as caught:
        retention(config(**context).log_retention_days)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("context ")
