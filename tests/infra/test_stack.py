"""HealthTechEtlStack with the default (dev) context: every requirement of the template, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match
from conftest import REPO, Synth, synthesize
from healthtech_infra.config import METRIC_NAMESPACE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


FAKE_CA_BUNDLE = "-----BEGIN CERTIFICATE-----\nTUlJQ2Zha2U=\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def ca_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands in for the AWS bundle `make deploy` downloads (tests are offline)."""
    path = tmp_path_factory.mktemp("rds-ca") / "global-bundle.pem"
    path.write_text(FAKE_CA_BUNDLE, encoding="ascii")
    return path


@pytest.fixture(scope="module")
def synth(glue_wheel: Path, ca_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synthesize({"rdsCaBundle": str(ca_bundle)}, tmp_path_factory.mktemp("cdk-dev"))


# --------------------------------------------------------------------------- helpers


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


def test_wheel_and_glue_script_are_deployed_as_files_to_glue_prefix(synth: Synth, glue_wheel: Path) -> None:
    _, deployment = synth.one("Custom::CDKBucketDeployment")
    props = deployment["Properties"]
    assert props["DestinationBucketName"] == ref(bucket_ids(synth)["StorageArtifactsBucket"])
    assert props["DestinationBucketKeyPrefix"] == "glue/"
    assert props["Prune"] is False
    # Each source is a staged asset directory holding exactly one file (no Docker bundling).
    staged = [
        sorted(p.name for p in (synth.outdir / f"asset.{key.removesuffix('.zip')}").iterdir())
        for key in props["SourceObjectKeys"]
    ]
    assert sorted(staged) == sorted([[glue_wheel.name], ["glue_etl.py"], ["rds-ca-bundle.pem"]])
    script = synth.outdir / f"asset.{props['SourceObjectKeys'][1].removesuffix('.zip')}" / "glue_etl.py"
    assert script.read_bytes() == (REPO / "glue_job" / "glue_etl.py").read_bytes()
    # The RDS CA bundle goes beside the script, byte for byte what `make deploy` downloaded.
    bundle = synth.outdir / f"asset.{props['SourceObjectKeys'][2].removesuffix('.zip')}" / "rds-ca-bundle.pem"
    assert bundle.read_text(encoding="ascii") == FAKE_CA_BUNDLE


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
    secret_id, secret = synth.one("AWS::SecretsManager::Secret")
    generate = secret["Properties"]["GenerateSecretString"]
    assert json.loads(generate["SecretStringTemplate"]) == {"username": "etl_admin"}
    assert generate["GenerateStringKey"] == "password"
    _, db = synth.one("AWS::RDS::DBInstance")
    password = json.dumps(db["Properties"]["MasterUserPassword"])
    assert "resolve:secretsmanager" in password and secret_id in password
    synth.assertions.resource_count_is("AWS::SecretsManager::SecretTargetAttachment", 1)


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


# --------------------------------------------------------------------------- Glue job


def test_glue_job_is_smallest_python_shell_39_with_the_wheel(synth: Synth, glue_wheel: Path) -> None:
    _, job = synth.one("AWS::Glue::Job")
    props = job["Properties"]
    artifacts = bucket_ids(synth)["StorageArtifactsBucket"]
    connection_id, _ = synth.one("AWS::Glue::Connection")
    assert props["Command"]["Name"] == "pythonshell"
    assert props["Command"]["PythonVersion"] == "3.9"
    assert props["Command"]["ScriptLocation"] == {
        "Fn::Join": ["", ["s3://", ref(artifacts), "/glue/glue_etl.py"]]
    }
    assert props["DefaultArguments"]["--extra-py-files"] == {
        "Fn::Join": ["", ["s3://", ref(artifacts), f"/glue/{glue_wheel.name}"]]
    }
    assert props["MaxCapacity"] == 0.0625
    assert props["ExecutionProperty"] == {"MaxConcurrentRuns": 1}
    assert 0 < props["Timeout"] <= 120
    assert props["Connections"] == {"Connections": [ref(connection_id)]}


def test_glue_job_default_arguments_match_the_script_contract(synth: Synth) -> None:
    _, job = synth.one("AWS::Glue::Job")
    args = job["Properties"]["DefaultArguments"]
    attachment_id, _ = synth.one("AWS::SecretsManager::SecretTargetAttachment")
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


def test_glue_job_role_is_least_privilege(synth: Synth, glue_wheel: Path) -> None:
    _, job = synth.one("AWS::Glue::Job")
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
    assert by_sid["ReadJobCode"]["Resource"] == [
        {"Fn::Join": ["", [artifacts, f"/glue/{name}"]]}
        for name in ("glue_etl.py", glue_wheel.name, "rds-ca-bundle.pem")
    ]
    attachment_id, _ = synth.one("AWS::SecretsManager::SecretTargetAttachment")
    assert by_sid["ReadDatabaseSecret"]["Resource"] == ref(attachment_id)
    assert by_sid["PutEtlMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}
    }
    # Nothing may touch other buckets, other secrets, or act on all S3 objects.
    for statement in statements:
        assert not any(a.endswith("*") for a in as_list(statement["Action"])), statement
        if any(a.startswith(("s3:", "secretsmanager:")) for a in as_list(statement["Action"])):
            assert statement["Resource"] != "*", statement


# --------------------------------------------------------------------------- orchestration


def test_trigger_lambda_runtime_handler_and_environment(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    props = synth.template["Resources"][function_id]["Properties"]
    major, minor = props["Runtime"].removeprefix("python").split(".")
    assert (int(major), int(minor)) >= (3, 12)
    assert props["Handler"] == "handler.handler"
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    assert props["Environment"]["Variables"] == {
        "STATE_MACHINE_ARN": ref(machine_id),
        "RAW_PREFIX": "raw/",
        "DOCTORS_FILENAME": "doctors.xlsx",
        "APPOINTMENTS_FILENAME": "appointments.xlsx",
        "SETTLE_SECONDS": "180",
        "LOG_LEVEL": "INFO",
    }
    log_group = find_id(synth, "AWS::Logs::LogGroup", "TriggerFunctionLogs")
    assert props["LoggingConfig"]["LogGroup"] == ref(log_group)
    assert props["ReservedConcurrentExecutions"] == 5


def test_trigger_failures_go_to_an_encrypted_alarmed_queue(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    queue_id, queue = synth.one("AWS::SQS::Queue")
    key_id, _ = synth.one("AWS::KMS::Key")
    assert queue["Properties"]["KmsMasterKeyId"] == get_att(key_id)
    _, invoke_config = synth.one("AWS::Lambda::EventInvokeConfig")
    assert invoke_config["Properties"] == {
        "DestinationConfig": {"OnFailure": {"Destination": get_att(queue_id)}},
        "FunctionName": ref(function_id),
        "MaximumEventAgeInSeconds": 6 * 3600,
        "MaximumRetryAttempts": 2,
        "Qualifier": "$LATEST",
    }
    synth.assertions.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {"PolicyDocument": {"Statement": Match.array_with([Match.object_like(
            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}},
    )
    (alarm,) = [
        a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    ]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": get_att(queue_id, "QueueName")}]
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_resolver_lambda_reads_raw_writes_claims_and_picks_capacity(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationResolverFunction")
    props = synth.template["Resources"][function_id]["Properties"]
    ids = bucket_ids(synth)
    assert props["Handler"] == "resolve_inputs.handler"
    assert props["Environment"]["Variables"] == {
        "CLAIM_BUCKET": ref(ids["StorageArtifactsBucket"]),
        "CLAIM_PREFIX": "runs/claims/",
        "LARGE_INPUT_BYTES": str(16 * 1024 * 1024),
    }
    statements = statements_of_role(synth, role_of_function(synth, function_id))
    by_sid = {s["Sid"]: s for s in statements if "Sid" in s}
    assert actions_of(statements) == {
        "s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:PutObject",
        "kms:Decrypt", "kms:GenerateDataKey", "logs:CreateLogStream", "logs:PutLogEvents",
    }  # fmt: skip
    assert by_sid["HeadRawUploads"]["Resource"] == {"Fn::Join": ["", [get_att(ids["StorageRawBucket"]), "/raw/*"]]}
    assert by_sid["WritePairClaims"]["Resource"] == {
        "Fn::Join": ["", [get_att(ids["StorageArtifactsBucket"]), "/runs/claims/*"]]
    }
    assert by_sid["TellMissingFromForbidden"]["Resource"] == get_att(ids["StorageRawBucket"])
    # Claims only need to outlive redelivery and the settle window.
    rules = synth.template["Resources"][ids["StorageArtifactsBucket"]]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert {"Id": "expire-pair-claims", "Prefix": "runs/claims/", "ExpirationInDays": 30, "Status": "Enabled"} in rules


def test_trigger_lambda_may_only_start_this_state_machine(synth: Synth) -> None:
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    role_id = role_of_function(synth, function_id)
    assert "ManagedPolicyArns" not in synth.template["Resources"][role_id]["Properties"]
    statements = statements_of_role(synth, role_id)
    machine_id, _ = synth.one("AWS::StepFunctions::StateMachine")
    log_group = find_id(synth, "AWS::Logs::LogGroup", "TriggerFunctionLogs")
    queue_id, _ = synth.one("AWS::SQS::Queue")
    key_id, _ = synth.one("AWS::KMS::Key")
    assert actions_of(statements) == {
        "states:StartExecution", "logs:CreateLogStream", "logs:PutLogEvents",
        # the on-failure destination: send to the KMS-encrypted queue
        "sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
        "kms:Decrypt", "kms:Encrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*",
    }  # fmt: skip
    for statement in statements:
        actions = as_list(statement["Action"])
        if "states:StartExecution" in actions:
            assert statement["Resource"] == ref(machine_id)
        elif any(a.startswith("sqs:") for a in actions):
            assert statement["Resource"] == get_att(queue_id)
        elif any(a.startswith("kms:") for a in actions):
            assert statement["Resource"] == get_att(key_id)
        else:
            assert statement["Resource"] == get_att(log_group)


def test_state_machine_logs_everything_encrypted_with_tracing(synth: Synth) -> None:
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    props = machine["Properties"]
    log_group = find_id(synth, "AWS::Logs::LogGroup", "StateMachineLogs")
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is True
    destination = props["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]
    assert destination == get_att(log_group)
    key_id, _ = synth.one("AWS::KMS::Key")
    assert synth.template["Resources"][log_group]["Properties"]["KmsKeyId"] == get_att(key_id)
    assert props["TracingConfiguration"] == {"Enabled": True}


def test_state_machine_role_runs_only_this_job_and_publishes_only_to_the_topic(synth: Synth) -> None:
    _, machine = synth.one("AWS::StepFunctions::StateMachine")
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = statements_of_role(synth, role_id)
    topic_id, _ = synth.one("AWS::SNS::Topic")
    job_id, _ = synth.one("AWS::Glue::Job")
    glue = [s for s in statements if any(a.startswith("glue:") for a in as_list(s["Action"]))]
    assert {"glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"} <= actions_of(
        glue
    )
    assert all(job_id in json.dumps(s["Resource"]) for s in glue)
    sns = [s for s in statements if "sns:Publish" in as_list(s["Action"])]
    assert [s["Resource"] for s in sns] == [ref(topic_id)]
    # The topic is KMS-encrypted: publishing needs its key, through SNS only.
    key_id, _ = synth.one("AWS::KMS::Key")
    assert synth.template["Resources"][topic_id]["Properties"]["KmsMasterKeyId"] == get_att(key_id)
    (kms,) = [s for s in statements if any(a.startswith("kms:") for a in as_list(s["Action"]))]
    assert sorted(as_list(kms["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == get_att(key_id)
    assert kms["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Join": ["", ["sns.", {"Ref": "AWS::Region"}, ".amazonaws.com"]]}}
    }
    resolver_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationResolverFunction")
    (invoke,) = [s for s in statements if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert invoke["Resource"][0] == get_att(resolver_id)


def test_committed_asl_equals_the_synthesized_definition(synth: Synth) -> None:
    from export_asl import ASL_FILE, synthesized_asl

    committed = json.loads(ASL_FILE.read_text(encoding="utf-8"))
    assert synthesized_asl(synth.template) == committed, "stale ASL: run `python infra/export_asl.py`"


def test_asl_settles_resolves_then_runs_the_glue_job_sync_with_retries_catch_and_alert(synth: Synth) -> None:
    from export_asl import synthesized_asl

    asl = synthesized_asl(synth.template)
    states = asl["States"]
    assert asl["StartAt"] == "SettleUploads"
    assert set(states) == {
        "SettleUploads", "ResolveInputs", "RunOrSkip", "NothingToLoad", "RunGlueEtlJob", "EtlSucceeded",
        "ResolveInputsFailed", "GlueJobFailed", "NotifyFailure", "EtlFailed",
    }  # fmt: skip
    assert 0 < asl["TimeoutSeconds"] <= 24 * 3600
    assert states["SettleUploads"] == {
        "Type": "Wait",
        "Comment": states["SettleUploads"]["Comment"],
        "SecondsPath": "$.settle_seconds",
        "Next": "ResolveInputs",
    }
    resolve = states["ResolveInputs"]
    assert resolve["Resource"] == "${ResolveInputsFunctionArn}" and resolve["ResultPath"] == "$.inputs"
    assert resolve["Parameters"]["execution.$"] == "$$.Execution.Id"
    assert resolve["Next"] == "RunOrSkip"
    assert states["RunOrSkip"]["Choices"] == [
        {"Variable": "$.inputs.action", "StringEquals": "run", "Next": "RunGlueEtlJob"}
    ]
    assert states["RunOrSkip"]["Default"] == "NothingToLoad" and states["NothingToLoad"]["Type"] == "Succeed"

    run = states["RunGlueEtlJob"]
    assert run["Resource"] == "arn:${Partition}:states:::glue:startJobRun.sync"
    assert run["Parameters"] == {
        "JobName": "${GlueJobName}",
        "MaxCapacity.$": "$.inputs.max_capacity",
        "Arguments": {
            "--RAW_BUCKET.$": "$.bucket",
            "--DOCTORS_KEY.$": "$.doctors_key",
            "--APPOINTMENTS_KEY.$": "$.appointments_key",
            "--DOCTORS_VERSION.$": "$.inputs.doctors_version",
            "--APPOINTMENTS_VERSION.$": "$.inputs.appointments_version",
            "--TRIGGER_KEY.$": "$.trigger_key",
            "--TRIGGER_VERSION.$": "$.trigger_version",
        },
    }
    assert run["Retry"] == [
        {
            "ErrorEquals": ["Glue.ConcurrentRunsExceededException"],
            "IntervalSeconds": 60,
            "MaxAttempts": 5,
            "BackoffRate": 2,
        },
        {
            "ErrorEquals": [
                "Glue.ThrottlingException",
                "Glue.InternalServiceException",
                "Glue.OperationTimeoutException",
                "Glue.AWSGlueException",
            ],
            "IntervalSeconds": 15,
            "MaxAttempts": 4,
            "BackoffRate": 2,
        },
    ]
    # Both tasks that can fail name themselves, then alert and fail.
    for task, marker in (("ResolveInputs", "ResolveInputsFailed"), ("RunGlueEtlJob", "GlueJobFailed")):
        assert states[task]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": marker}]
        assert states[marker] == {
            "Type": "Pass", "Result": task, "ResultPath": "$.failed_state", "Next": "NotifyFailure"
        }  # fmt: skip
    assert run["Next"] == "EtlSucceeded" and states["EtlSucceeded"]["Type"] == "Succeed"
    notify = states["NotifyFailure"]
    assert notify["Resource"] == "arn:${Partition}:states:::sns:publish"
    assert notify["Parameters"]["TopicArn"] == "${AlertTopicArn}"
    message = notify["Parameters"]["Message"]
    assert message["execution.$"] == "$$.Execution.Id" and message["execution_name.$"] == "$$.Execution.Name"
    assert message["failed_state.$"] == "$.failed_state"
    assert message["cause.$"] == "$.error.Cause" and message["error.$"] == "$.error.Error"
    assert message["reports"] == "s3://${ReportBucketName}/reports/"
    assert message["input"]["trigger_key.$"] == "$.trigger_key"
    assert notify["Next"] == "EtlFailed" and states["EtlFailed"]["Type"] == "Fail"
    # Only what moto's executor runs: JSONPath, no JSONata, no result selectors.
    text = json.dumps(asl)
    for unsupported in ("QueryLanguage", "JSONata", "ResultSelector", 'Arguments": "{%', "Output"):
        assert unsupported not in text


# --------------------------------------------------------------------------- monitoring


def test_alert_topic_is_kms_encrypted_and_tls_only_without_default_subscription(synth: Synth) -> None:
    topic_id, topic = synth.one("AWS::SNS::Topic")
    key_id, _ = synth.one("AWS::KMS::Key")
    assert topic["Properties"]["KmsMasterKeyId"] == get_att(key_id)
    synth.assertions.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "Topics": [ref(topic_id)],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            },
        },
    )
    synth.assertions.resource_count_is("AWS::SNS::Subscription", 0)


def test_topic_policy_lets_only_this_stacks_alarms_publish(synth: Synth) -> None:
    topic_id, _ = synth.one("AWS::SNS::Topic")
    _, policy = synth.one("AWS::SNS::TopicPolicy")
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allows == [
        {
            "Sid": "AllowThisStacksAlarmsToPublish",
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": ref(topic_id),
            "Condition": {
                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                "ArnLike": {
                    "aws:SourceArn": {
                        "Fn::Join": [
                            "",
                            [
                                "arn:", {"Ref": "AWS::Partition"}, ":cloudwatch:", {"Ref": "AWS::Region"}, ":",
                                {"Ref": "AWS::AccountId"}, ":alarm:healthtech-etl-dev-*",
                            ],
                        ]
                    }
                },
            },
        }
    ]  # fmt: skip


def test_every_alarm_notifies_the_topic_and_matches_the_topic_policy(synth: Synth) -> None:
    topic_id, _ = synth.one("AWS::SNS::Topic")
    alarms = synth.resources("AWS::CloudWatch::Alarm")
    assert len(alarms) == 10  # workflow x2, trigger errors, dead letters, 4 quality, acceptance x2
    for logical_id, alarm in alarms.items():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [ref(topic_id)], logical_id
        # The name is what aws:SourceArn's pattern (alarm:healthtech-etl-dev-*) matches.
        assert props["AlarmName"].startswith("healthtech-etl-dev-"), logical_id


def test_acceptance_rate_has_a_warning_and_a_critical_alarm(synth: Synth) -> None:
    topic_id, _ = synth.one("AWS::SNS::Topic")
    alarms = {
        a["Properties"]["AlarmName"]: a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
        if a["Properties"]["MetricName"] == "AcceptanceRate"
    }
    assert sorted(alarms) == ["healthtech-etl-dev-dq-AcceptanceRate-critical", "healthtech-etl-dev-dq-AcceptanceRate-warning"]
    for name, threshold, severity in (("warning", 90, "WARNING"), ("critical", 50, "CRITICAL")):
        alarm = alarms[f"healthtech-etl-dev-dq-AcceptanceRate-{name}"]
        assert alarm["Namespace"] == METRIC_NAMESPACE and "Dimensions" not in alarm
        assert alarm["ComparisonOperator"] == "LessThanThreshold" and alarm["Threshold"] == threshold
        assert alarm["Statistic"] == "Minimum" and alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmDescription"].startswith(severity)
        assert alarm["AlarmActions"] == [ref(topic_id)]


def test_glue_python_shell_log_groups_get_retention_without_being_owned(synth: Synth) -> None:
    names = [g["Properties"].get("LogGroupName") for g in synth.resources("AWS::Logs::LogGroup").values()]
    assert not [n for n in names if isinstance(n, str) and n.startswith("/aws-glue/python-jobs")]
    calls = [
        json.loads(r["Properties"][phase])
        for r in synth.resources("Custom::AWS").values()
        for phase in ("Create", "Update")
        if phase in r["Properties"]
    ]
    for group in ("/aws-glue/python-jobs/output", "/aws-glue/python-jobs/error"):
        created = [c for c in calls if c["action"] == "createLogGroup" and c["parameters"]["logGroupName"] == group]
        assert created and all(c["ignoreErrorCodesMatching"] == "ResourceAlreadyExistsException" for c in created)
        retention = [c for c in calls if c["action"] == "putRetentionPolicy" and c["parameters"]["logGroupName"] == group]
        assert len(retention) == 2 and all(c["parameters"]["retentionInDays"] == 30 for c in retention)
    # Never a Delete call: the groups are shared by every Python shell job of the account.
    assert not [r for r in synth.resources("Custom::AWS").values() if "Delete" in r["Properties"]]


def test_kms_key_rotates_and_lets_cloudwatch_use_it(synth: Synth) -> None:
    _, key = synth.one("AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    principals = json.dumps([s.get("Principal") for s in key["Properties"]["KeyPolicy"]["Statement"]])
    assert "cloudwatch.amazonaws.com" in principals and "logs." in principals
    # Alarms publish to the encrypted topic: CloudWatch may use the key, for this account only.
    (cloudwatch,) = [
        s for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert sorted(as_list(cloudwatch["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def alarms_by_metric(synth: Synth) -> dict[str, dict[str, Any]]:
    return {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in synth.resources("AWS::CloudWatch::Alarm").values()
    }


def test_workflow_and_lambda_alarms_notify_the_topic(synth: Synth) -> None:
    topic_id, _ = synth.one("AWS::SNS::Topic")
    alarms = alarms_by_metric(synth)
    for metric, namespace in (
        ("ExecutionsFailed", "AWS/States"),
        ("ExecutionsTimedOut", "AWS/States"),
        ("Errors", "AWS/Lambda"),
    ):
        alarm = alarms[metric]
        assert alarm["Namespace"] == namespace
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
        assert alarm["AlarmActions"] == [ref(topic_id)]


@pytest.mark.parametrize(
    ("metric", "operator", "threshold"),
    [
        ("IdCompleteness", "LessThanThreshold", 100),
        ("ReferentialIntegrity", "LessThanThreshold", 95),
        ("DuplicateRate", "GreaterThanThreshold", 5),
        ("TypingSuccess", "LessThanThreshold", 100),
    ],
)
def test_data_quality_alarms_use_the_report_thresholds(
    synth: Synth, metric: str, operator: str, threshold: float
) -> None:
    alarm = alarms_by_metric(synth)[metric]
    topic_id, _ = synth.one("AWS::SNS::Topic")
    assert alarm["Namespace"] == METRIC_NAMESPACE
    assert "Dimensions" not in alarm
    assert alarm["ComparisonOperator"] == operator
    assert alarm["Threshold"] == threshold
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [ref(topic_id)]


def test_dashboard_shows_workflow_quality_rows_and_database(synth: Synth) -> None:
    _, dashboard = synth.one("AWS::CloudWatch::Dashboard")
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for needle in (
        "IdCompleteness",
        "DuplicateRate",
        "RowsLoaded",
        "RowsRejected",
        "ExecutionsFailed",
        "CPUUtilization",
        "AcceptanceRate",
        "/aws-glue/python-jobs/output",
        "/aws-glue/python-jobs/error",
        "ApproximateNumberOfMessagesVisible",
    ):
        assert needle in body


def test_every_log_group_has_retention_and_the_stack_key(synth: Synth) -> None:
    key_id, _ = synth.one("AWS::KMS::Key")
    log_groups = synth.resources("AWS::Logs::LogGroup")
    assert len(log_groups) >= 5
    for logical_id, group in log_groups.items():
        assert group["Properties"]["RetentionInDays"] > 0, logical_id
        assert group["Properties"]["KmsKeyId"] == get_att(key_id), logical_id
    # Every Lambda we own logs to one of these groups (retention set, not "never expire").
    function_id = find_id(synth, "AWS::Lambda::Function", "OrchestrationTriggerFunction")
    assert (
        synth.template["Resources"][function_id]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        in log_groups
    )
    _, rds_instance = synth.one("AWS::RDS::DBInstance")
    names = [g["Properties"].get("LogGroupName") for g in log_groups.values()]
    assert f"/aws/rds/instance/{rds_instance['Properties']['DBInstanceIdentifier']}/postgresql" in names


# --------------------------------------------------------------------------- configuration and checks


def test_stack_is_environment_agnostic_and_needs_no_lookups(synth: Synth) -> None:
    import aws_cdk as cdk

    assert cdk.Token.is_unresolved(synth.stack.account) and cdk.Token.is_unresolved(synth.stack.region)
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    assert not manifest.get("missing"), manifest.get("missing")
    assert "HealthTechEtlStack" in manifest["artifacts"]


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
