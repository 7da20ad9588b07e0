"""The Glue job of the default (dev) stack: its artefacts in S3, its definition, its role."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    FAKE_CA_BUNDLE,
    REPO,
    Synth,
    actions_of,
    as_list,
    bucket_ids,
    find_id,
    get_att,
    ref,
    statements_of_role,
)
from healthtech_infra.config import METRIC_NAMESPACE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --------------------------------------------------------------------------- Glue job


def test_wheels_and_glue_script_are_deployed_as_files_to_glue_prefix(
    synth: Synth, glue_wheel: Path, glue_libraries: list[Path]
) -> None:
    _, deployment = synth.one("Custom::CDKBucketDeployment")
    props = deployment["Properties"]
    assert props["DestinationBucketName"] == ref(bucket_ids(synth)["StorageArtifactsBucket"])
    assert props["DestinationBucketKeyPrefix"] == "glue/"
    assert props["Prune"] is False
    # Each source is a staged asset directory holding exactly one file (no Docker bundling).
    assets = [synth.outdir / f"asset.{key.removesuffix('.zip')}" for key in props["SourceObjectKeys"]]
    staged = [sorted(p.name for p in asset.iterdir()) for asset in assets]
    assert staged == [[glue_wheel.name], ["db_access.py", "glue_etl.py"], ["rds-ca-bundle.pem"]] + [[w.name] for w in glue_libraries]
    assert (assets[1] / "glue_etl.py").read_bytes() == (REPO / "glue_job" / "glue_etl.py").read_bytes()
    # The RDS CA bundle goes beside the script, byte for byte what `make deploy` downloaded.
    assert (assets[2] / "rds-ca-bundle.pem").read_text(encoding="ascii") == FAKE_CA_BUNDLE
    # The library wheels are the ones build-glue verified and staged, byte for byte.
    for asset, wheel in zip(assets[3:], glue_libraries):
        assert (asset / wheel.name).read_bytes() == wheel.read_bytes()
    assert [w.name.split("-")[0] for w in glue_libraries] == ["packaging", "python_calamine"]


def test_glue_job_is_smallest_python_shell_39_with_the_wheels(
    synth: Synth, glue_wheel: Path, glue_libraries: list[Path]
) -> None:
    _, job = synth.etl_job()
    props = job["Properties"]
    artifacts = bucket_ids(synth)["StorageArtifactsBucket"]
    connection_id, _ = synth.one("AWS::Glue::Connection")
    assert props["Command"]["Name"] == "pythonshell"
    assert props["Command"]["PythonVersion"] == "3.9"
    assert props["Command"]["ScriptLocation"] == {
        "Fn::Join": ["", ["s3://", ref(artifacts), "/glue/glue_etl.py"]]
    }
    # Glue's launcher installs them one by one in this order: the reader's dependency, the reader, the package.
    packaging, calamine = (wheel.name for wheel in glue_libraries)
    assert props["DefaultArguments"]["--extra-py-files"] == {
        "Fn::Join": ["", [
            "s3://", ref(artifacts), f"/glue/{packaging},s3://",
            ref(artifacts), f"/glue/{calamine},s3://",
            ref(artifacts), f"/glue/{glue_wheel.name}",
        ]]
    }  # fmt: skip
    assert props["MaxCapacity"] == 0.0625
    # Parallel clinics (glueMaxConcurrentRuns, default 10); runs beyond it queue (WAITING), not fail.
    assert props["ExecutionProperty"] == {"MaxConcurrentRuns": 10}
    assert props["JobRunQueuingEnabled"] is True
    assert 0 < props["Timeout"] <= 120
    assert props["Connections"] == {"Connections": [ref(connection_id)]}


def test_glue_job_default_arguments_match_the_script_contract(synth: Synth) -> None:
    _, job = synth.etl_job()
    args = job["Properties"]["DefaultArguments"]
    attachment_id = find_id(synth, "AWS::SecretsManager::SecretTargetAttachment", "EtlSecret")
    assert args["--DB_SECRET_ARN"] == ref(attachment_id)
    assert args["--REPORT_BUCKET"] == ref(bucket_ids(synth)["StorageArtifactsBucket"])
    assert args["--REPORT_PREFIX"] == "reports"
    # TLS that authenticates RDS: AWS's CA bundle, deployed to glue/ beside the script.
    assert args["--DB_SSLMODE"] == "verify-full"
    assert args["--DB_SSLROOTCERT"] == {
        "Fn::Join": ["", ["s3://", ref(bucket_ids(synth)["StorageArtifactsBucket"]), "/glue/rds-ca-bundle.pem"]]
    }
    assert args["--library-set"] == "analytics"
    assert args["library-set"] == "analytics"
    assert args["--enable-continuous-cloudwatch-log"] == "true"
    log_group = find_id(synth, "AWS::Logs::LogGroup", "EtlJobLogs")
    assert args["--continuous-log-logGroup"] == ref(log_group)
    # Run arguments come from the state machine, never baked into the job.
    assert not {"--RAW_BUCKET", "--DOCTORS_KEY", "--APPOINTMENTS_KEY"} & set(args)


def test_glue_job_role_is_least_privilege(synth: Synth, glue_wheel: Path, glue_libraries: list[Path]) -> None:
    _, job = synth.etl_job()
    role_id = job["Properties"]["Role"]["Fn::GetAtt"][0]
    role = synth.template["Resources"][role_id]["Properties"]
    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "glue.amazonaws.com"}
    statements = statements_of_role(synth, role_id)
    assert actions_of(statements) == {
        "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:PutObject",
        "kms:Decrypt", "kms:GenerateDataKey",
        "secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret",
        "cloudwatch:PutMetricData",
        "logs:CreateLogStream", "logs:PutLogEvents", "logs:CreateLogGroup",
        "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeVpcEndpoints", "ec2:DescribeRouteTables", "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups", "ec2:DescribeVpcAttribute", "ec2:CreateTags", "ec2:DeleteTags",
        "glue:GetConnection",
    }  # fmt: skip
    assert all(s["Effect"] == "Allow" for s in statements)
    by_sid = {s["Sid"]: s for s in statements if "Sid" in s}
    log_group = find_id(synth, "AWS::Logs::LogGroup", "EtlJobLogs")
    unnamed = [s for s in statements if "Sid" not in s]  # CDK's grant for the continuous-log group
    assert unnamed == [
        {
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Effect": "Allow",
            "Resource": get_att(log_group),
        }
    ]
    ids = bucket_ids(synth)
    assert by_sid["ReadRawUploads"]["Resource"] == {
        "Fn::Join": ["", [get_att(ids["StorageRawBucket"]), "/raw/*"]]
    }
    assert by_sid["WriteReports"]["Resource"] == {
        "Fn::Join": ["", [get_att(ids["StorageArtifactsBucket"]), "/reports/*"]]
    }
    artifacts = get_att(ids["StorageArtifactsBucket"])
    # (minimizePolicies sorts a statement's resources)
    assert by_sid["ReadJobCode"]["Resource"] == [
        {"Fn::Join": ["", [artifacts, f"/glue/{name}"]]}
        for name in sorted(["glue_etl.py", *(w.name for w in glue_libraries), glue_wheel.name, "rds-ca-bundle.pem"])
    ]
    attachment_id = find_id(synth, "AWS::SecretsManager::SecretTargetAttachment", "EtlSecret")
    assert by_sid["ReadDatabaseSecret"]["Resource"] == ref(attachment_id)
    assert by_sid["PutEtlMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}
    }
    # Nothing may touch other buckets, other secrets, or act on all S3 objects.
    for statement in statements:
        assert not any(a.endswith("*") for a in as_list(statement["Action"])), statement
        if any(a.startswith(("s3:", "secretsmanager:")) for a in as_list(statement["Action"])):
            assert statement["Resource"] != "*", statement
