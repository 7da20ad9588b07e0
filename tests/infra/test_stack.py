"""HealthTechEtl-dev (the default context): storage, clinic uploads, network, database and the checks.

The Glue job, orchestration and monitoring have their own modules; all share one synth (conftest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match
from conftest import (
    Synth,
    actions_of,
    bucket_ids,
    find_id,
    get_att,
    ref,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------- storage


def test_raw_bucket_is_versioned_kms_encrypted_logged_and_expires_old_versions(synth: Synth) -> None:
    ids = bucket_ids(synth)
    raw = synth.template["Resources"][ids["StorageRawBucket"]]["Properties"]
    assert raw["VersioningConfiguration"] == {"Status": "Enabled"}
    sse = raw["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert sse["ServerSideEncryptionByDefault"]["KMSMasterKeyID"] == get_att(synth.one("AWS::KMS::Key")[0])
    assert raw["LoggingConfiguration"]["DestinationBucketName"] == ref(ids["StorageAccessLogsBucket"])
    rules = raw["LifecycleConfiguration"]["Rules"]
    assert any(
        r["Status"] == "Enabled" and r["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0 for r in rules
    )


def test_every_bucket_blocks_public_access_is_encrypted_and_denies_plain_http(synth: Synth) -> None:
    ids = bucket_ids(synth)
    assert len(synth.resources("AWS::S3::Bucket")) == 3
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]
        for p in synth.resources("AWS::S3::BucketPolicy").values()
    }
    for logical_id in ids.values():
        props = synth.template["Resources"][logical_id]["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        denies = [
            s
            for s in policies[logical_id]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"
            and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        assert denies, f"{logical_id} has no TLS-only policy"


def test_artifacts_bucket_is_versioned_private_and_logged(synth: Synth) -> None:
    ids = bucket_ids(synth)
    art = synth.template["Resources"][ids["StorageArtifactsBucket"]]["Properties"]
    assert art["VersioningConfiguration"] == {"Status": "Enabled"}
    assert art["LoggingConfiguration"]["DestinationBucketName"] == ref(ids["StorageAccessLogsBucket"])
    assert ids["StorageArtifactsBucket"] != ids["StorageRawBucket"]


def test_xlsx_uploads_under_raw_notify_the_trigger_lambda(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    synth.assertions.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "BucketName": ref(bucket_ids(synth)["StorageRawBucket"]),
            "NotificationConfiguration": {
                "LambdaFunctionConfigurations": [
                    {
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {
                                "FilterRules": Match.array_with(
                                    [
                                        {"Name": "suffix", "Value": ".xlsx"},
                                        {"Name": "prefix", "Value": "raw/"},
                                    ]
                                )
                            }
                        },
                        "LambdaFunctionArn": get_att(function_id),
                    }
                ]
            },
        },
    )


# --------------------------------------------------------------------------- clinic uploads


def test_clinic_upload_policy_writes_only_the_callers_own_source_folder(synth: Synth) -> None:
    raw = bucket_ids(synth)["StorageRawBucket"]
    key_id, _ = synth.one("AWS::KMS::Key")
    policy_id, policy = synth.one("AWS::IAM::ManagedPolicy")
    synth.assertions.has_resource_properties(
        "AWS::IAM::ManagedPolicy",
        {
            "ManagedPolicyName": "healthtech-etl-dev-clinic-upload",
            "PolicyDocument": {
                "Statement": [
                    {
                        "Sid": "UploadToOwnSourceFolder",
                        "Effect": "Allow",
                        "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
                        # ${aws:PrincipalTag/source} stays an IAM policy variable (per caller)
                        "Resource": {"Fn::Join": ["", [get_att(raw), "/raw/${aws:PrincipalTag/source}/*"]]},
                        "Condition": {"Null": {"aws:PrincipalTag/source": "false"}},
                    },
                    {
                        "Sid": "EncryptUploadsWithDataKey",
                        "Effect": "Allow",
                        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                        "Resource": get_att(key_id),
                        "Condition": {
                            "StringEquals": {
                                "kms:ViaService": {"Fn::Join": ["", ["s3.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]},
                                "kms:EncryptionContext:aws:s3:arn": get_att(raw),
                            }
                        },
                    },
                ]
            },
        },
    )
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    # Nothing to read or list, nothing outside raw/<source>/, no other key operation.
    assert actions_of(statements) == {"s3:PutObject", "s3:AbortMultipartUpload", "kms:GenerateDataKey", "kms:Decrypt"}
    assert not {"Roles", "Users", "Groups"} & set(policy["Properties"])  # administrators attach it
    assert synth.template["Outputs"]["ClinicUploadPolicyArn"]["Value"] == ref(policy_id)


# --------------------------------------------------------------------------- network and database


def test_vpc_has_only_isolated_subnets_and_no_nat_or_internet_gateway(synth: Synth) -> None:
    for absent in ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::EIP"):
        synth.assertions.resource_count_is(absent, 0)
    subnets = synth.resources("AWS::EC2::Subnet")
    assert len(subnets) == 2
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    for route in synth.resources("AWS::EC2::Route").values():
        assert "GatewayId" not in route["Properties"] and "NatGatewayId" not in route["Properties"]
    synth.assertions.has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "ALL"})


def test_vpc_endpoints_cover_everything_the_job_calls(synth: Synth) -> None:
    endpoints = [e["Properties"] for e in synth.resources("AWS::EC2::VPCEndpoint").values()]

    def service(props: dict[str, Any]) -> str:
        name = props["ServiceName"]
        return name if isinstance(name, str) else json.dumps(name)

    gateway = [e for e in endpoints if e.get("VpcEndpointType") == "Gateway"]
    assert len(gateway) == 1 and ".s3" in service(gateway[0])
    interface = {
        service(e).rsplit(".", 1)[-1].strip('"]}'): e
        for e in endpoints
        if e.get("VpcEndpointType") == "Interface"
    }
    assert set(interface) == {"secretsmanager", "logs", "monitoring", "glue"}
    endpoint_sg = find_id(synth, "AWS::EC2::SecurityGroup", "EndpointSecurityGroup")
    # Only in the Glue job's AZ by default (interface endpoints are billed per AZ-hour).
    _, connection = synth.one("AWS::Glue::Connection")
    job_subnet = connection["Properties"]["ConnectionInput"]["PhysicalConnectionRequirements"]["SubnetId"]
    for props in interface.values():
        assert props["PrivateDnsEnabled"] is True
        assert props["SecurityGroupIds"] == [get_att(endpoint_sg, "GroupId")]
        assert props["SubnetIds"] == [job_subnet]


def test_postgres_is_private_encrypted_tls_only_and_backed_up(synth: Synth) -> None:
    db_id, db = synth.one("AWS::RDS::DBInstance")
    props = db["Properties"]
    assert props["Engine"] == "postgres"
    assert int(props["EngineVersion"].split(".")[0]) >= 17
    assert props["PubliclyAccessible"] is False
    assert props["StorageEncrypted"] is True
    assert props["BackupRetentionPeriod"] >= 7
    assert props["Port"] == "5432"
    # dev defaults: single-AZ, no deletion protection, deleted with the stack
    assert props["MultiAZ"] is False
    assert props["DeletionProtection"] is False
    assert db["DeletionPolicy"] == "Delete"
    pg_id, pg = synth.one("AWS::RDS::DBParameterGroup")
    assert props["DBParameterGroupName"] == ref(pg_id)
    assert pg["Properties"]["Parameters"]["rds.force_ssl"] == "1"
    assert pg["Properties"]["Family"] == f"postgres{props['EngineVersion'].split('.')[0]}"


def test_database_credentials_are_generated_into_secrets_manager(synth: Synth) -> None:
    secret_id = find_id(synth, "AWS::SecretsManager::Secret", "DatabasePostgresSecret")  # the master's
    generate = synth.template["Resources"][secret_id]["Properties"]["GenerateSecretString"]
    assert json.loads(generate["SecretStringTemplate"]) == {"username": "etl_admin"}
    assert generate["GenerateStringKey"] == "password"
    _, db = synth.one("AWS::RDS::DBInstance")
    password = json.dumps(db["Properties"]["MasterUserPassword"])
    assert "resolve:secretsmanager" in password and secret_id in password
    # The master's and the two login roles' (test_access.py).
    synth.assertions.resource_count_is("AWS::SecretsManager::SecretTargetAttachment", 3)


def test_only_the_glue_job_security_group_reaches_port_5432(synth: Synth) -> None:
    db_sg = find_id(synth, "AWS::EC2::SecurityGroup", "DatabaseSecurityGroup")
    glue_sg = find_id(synth, "AWS::EC2::SecurityGroup", "GlueJobSecurityGroup")
    assert "SecurityGroupIngress" not in synth.template["Resources"][db_sg]["Properties"]
    ingress = [
        i["Properties"]
        for i in synth.resources("AWS::EC2::SecurityGroupIngress").values()
        if i["Properties"]["GroupId"] == get_att(db_sg, "GroupId")
    ]
    assert ingress == [
        {
            "Description": "PostgreSQL from the Glue job",
            "FromPort": 5432,
            "ToPort": 5432,
            "IpProtocol": "tcp",
            "GroupId": get_att(db_sg, "GroupId"),
            "SourceSecurityGroupId": get_att(glue_sg, "GroupId"),
        }
    ]
    _, db = synth.one("AWS::RDS::DBInstance")
    assert db["Properties"]["VPCSecurityGroups"] == [get_att(db_sg, "GroupId")]
    # No security group in the stack is open to the internet.
    for sg in synth.resources("AWS::EC2::SecurityGroup").values():
        for rule in sg["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0"


def test_glue_connection_is_network_type_with_self_referencing_security_group(synth: Synth) -> None:
    glue_sg = find_id(synth, "AWS::EC2::SecurityGroup", "GlueJobSecurityGroup")
    _, connection = synth.one("AWS::Glue::Connection")
    requirements = connection["Properties"]["ConnectionInput"]["PhysicalConnectionRequirements"]
    assert connection["Properties"]["ConnectionInput"]["ConnectionType"] == "NETWORK"
    assert requirements["SecurityGroupIdList"] == [get_att(glue_sg, "GroupId")]
    isolated = [k for k in synth.resources("AWS::EC2::Subnet") if "isolated" in k.lower()]
    assert requirements["SubnetId"]["Ref"] in isolated
    synth.assertions.has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "GroupId": get_att(glue_sg, "GroupId"),
            "SourceSecurityGroupId": get_att(glue_sg, "GroupId"),
            "IpProtocol": "tcp",
            "FromPort": 0,
            "ToPort": 65535,
        },
    )


# --------------------------------------------------------------------------- configuration and checks


def test_stack_is_environment_agnostic_and_needs_no_lookups(synth: Synth) -> None:
    import aws_cdk as cdk

    assert cdk.Token.is_unresolved(synth.stack.account) and cdk.Token.is_unresolved(synth.stack.region)
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    assert not manifest.get("missing"), manifest.get("missing")
    assert "HealthTechEtl-dev" in manifest["artifacts"]


def test_cdk_nag_passes_with_only_reasoned_acknowledgements(synth: Synth) -> None:
    # The fixture synthesized with AwsSolutionsChecks registered: any finding would have raised.
    report = (
        json.loads((synth.outdir / "validation-report.json").read_text())
        if (synth.outdir / "validation-report.json").exists()
        else {"pluginReports": []}
    )
    assert all(r.get("summary", {}).get("status") != "failure" for r in report["pluginReports"])
    rules = [rule for _, rule, _ in synth.acknowledged]
    pairs = [(path, rule) for path, rule, _ in synth.acknowledged]
    assert len(pairs) == len(set(pairs)), "the same finding acknowledged twice"
    assert "AwsSolutions-RDS3" in rules and "AwsSolutions-RDS10" in rules  # dev only
    for path, rule, reason in synth.acknowledged:
        assert rule.startswith(("AwsSolutions-", "Annotation::")), rule
        assert len(reason) >= 60 and reason.endswith("."), (path, rule, reason)
    # No blanket acknowledgement of a whole rule on the stack.
    assert not [p for p, _, _ in synth.acknowledged if p == synth.stack.node.path]


def test_cdk_nag_fails_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    """The same wiring as build_app, on a throwaway stack with a non-compliant bucket."""
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3
    from cdk_nag import AwsSolutionsChecks

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "NagProbe")
    s3.Bucket(stack, "Plain")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(Exception, match="(?i)validation"):
        app.synth()


def test_cfn_lint_finds_no_errors(synth: Synth) -> None:
    from cfnlint.api import ManualArgs, lint

    matches = lint(json.dumps(synth.template), config=ManualArgs(regions=["eu-west-1", "us-east-1"]))
    errors = [
        f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
        for m in matches
        if m.rule.id.startswith("E")
    ]
    assert errors == []
    # Warnings allowed: only W3005 (redundant DependsOn that aws-cdk-lib itself generates).
    assert {m.rule.id for m in matches} <= {"W3005"}
