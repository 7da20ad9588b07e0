"""The prod switches (context env=prod) and the context validation; one more synth for prod."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Synth, synthesize
from healthtech_infra.config import EtlConfig

PROD_CONTEXT = {
    "env": "prod",
    "alertEmail": "oncall@example.org",
    "dbInstanceClass": "db.m7g.large",
    "endpointAzs": "2",
    "settleSeconds": "300",
    "largeInputMb": "8",
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
    assert staged == [[glue_wheel.name], ["glue_etl.py"]] + [[wheel.name] for wheel in glue_libraries]
    # The job still verifies RDS against the bundle's fixed key (scripts/cdk.sh deploy puts it there).
    _, job = prod.one("AWS::Glue::Job")
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
    assert trigger["SETTLE_SECONDS"] == "300"
    assert resolver["LARGE_INPUT_BYTES"] == str(8 * 1024 * 1024)


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
    assert props["DBInstanceIdentifier"] == "healthtech-etl-prod"
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
    _, job = prod.one("AWS::Glue::Job")
    _, machine = prod.one("AWS::StepFunctions::StateMachine")
    assert job["Properties"]["Name"] == "healthtech-etl-prod"
    assert machine["Properties"]["StateMachineName"] == "healthtech-etl-prod"


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
    c = config(env="prod")
    assert (c.multi_az, c.deletion_protection, c.removal_policy_name) == (True, True, "retain")
    c = config(env="prod", multiAz="false", removalPolicy="snapshot")
    assert c.multi_az is False and c.removal_policy_name == "snapshot"


def test_new_knobs_have_documented_defaults_and_accept_overrides() -> None:
    c = config()
    assert (c.settle_seconds, c.large_input_mb, c.endpoint_azs, c.trigger_reserved_concurrency) == (180, 16, 1, 5)
    assert c.rds_ca_bundle.name == "global-bundle.pem" and c.rds_ca_bundle.is_absolute()
    c = config(settleSeconds="0", largeInputMb="64", endpointAzs="2", triggerReservedConcurrency="2")
    assert (c.settle_seconds, c.large_input_mb, c.endpoint_azs, c.trigger_reserved_concurrency) == (0, 64, 2, 2)


@pytest.mark.parametrize(
    "context",
    [
        {"alertEmail": "not-an-address"},
        {"removalPolicy": "keep"},
        {"env": "Prod Env"},
        {"logRetentionDays": "10"},
        {"settleSeconds": "-1"},
        {"settleSeconds": "7200"},
        {"largeInputMb": "0"},
        {"endpointAzs": "3"},
        {"triggerReservedConcurrency": "0"},
        {"settleSeconds": "soon"},
    ],
)
def test_invalid_context_is_rejected(context: dict[str, str]) -> None:
    from healthtech_infra.config import retention

    with pytest.raises(ValueError):
        retention(config(**context).log_retention_days)
