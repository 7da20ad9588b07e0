"""Database access in the dev stack (the session's synth): the login roles' secrets, the db-setup job
the deploy starts, the ops job operators use, and who may read which secret."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Synth, bucket_ids, find_id, get_att, ref, statements_of_role
from healthtech_infra.db_access import setup_version

from healthtech_etl.db_roles import ETL_ROLE, READER_ROLE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def secret_ids(synth: Synth) -> dict[str, tuple[str, str]]:
    """kind -> (secret id, attachment id): the master's (RDS) and the two login roles'."""
    found = {}
    for kind, fragment in (("master", "DatabasePostgresSecret"), ("etl", "DatabaseEtlSecret"),
                           ("reader", "DatabaseReaderSecret")):
        secret = [k for k in synth.resources("AWS::SecretsManager::Secret") if fragment in k]
        attachment = find_id(synth, "AWS::SecretsManager::SecretTargetAttachment", fragment)
        assert len(secret) == 1, (fragment, secret)
        found[kind] = (secret[0], attachment)
    return found


def rendered(value: Any) -> str:
    """A string or an Fn::Join of strings and intrinsics, the intrinsics as <ref>."""
    if isinstance(value, str):
        return value
    return "".join(part if isinstance(part, str) else "<ref>" for part in value["Fn::Join"][1])


def job(synth: Synth, fragment: str) -> tuple[str, dict[str, Any]]:
    job_id = find_id(synth, "AWS::Glue::Job", fragment)
    return job_id, synth.template["Resources"][job_id]


def secrets_read_by(synth: Synth, job_resource: dict[str, Any]) -> set[str]:
    """The secret attachments (or secrets) a job's role may read, as logical ids."""
    role_id = job_resource["Properties"]["Role"]["Fn::GetAtt"][0]
    read = set()
    for statement in statements_of_role(synth, role_id):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if any(action.startswith("secretsmanager:") for action in actions):
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            read |= {resource["Ref"] for resource in resources}
    return read


def test_each_login_role_has_a_generated_secret_attached_to_the_instance(synth: Synth) -> None:
    ids = secret_ids(synth)
    db_id, _ = synth.one("AWS::RDS::DBInstance")
    for kind, username in (("etl", ETL_ROLE), ("reader", READER_ROLE)):
        secret_id, attachment_id = ids[kind]
        props = synth.template["Resources"][secret_id]["Properties"]
        assert props["Name"] == f"healthtech-etl-dev-db-{kind}"
        template = json.loads(rendered(props["GenerateSecretString"]["SecretStringTemplate"]))
        # masterarn: the master secret, for a multi-user rotation function (not set up yet)
        assert template == {"username": username, "dbname": "healthtech", "masterarn": "<ref>"}
        assert props["GenerateSecretString"]["GenerateStringKey"] == "password"
        attachment = synth.template["Resources"][attachment_id]["Properties"]
        assert attachment == {"SecretId": ref(secret_id), "TargetId": ref(db_id), "TargetType": "AWS::RDS::DBInstance"}


def test_only_the_setup_job_reads_the_master_secret(synth: Synth) -> None:
    ids = secret_ids(synth)
    master = {ids["master"][0], ids["master"][1]}
    etl_id, etl_job = synth.etl_job()
    _, setup = job(synth, "DbAccessSetupJob")
    _, ops = job(synth, "DbAccessOpsJob")
    assert secrets_read_by(synth, etl_job) == {ids["etl"][1]}
    assert etl_job["Properties"]["DefaultArguments"]["--DB_SECRET_ARN"] == ref(ids["etl"][1])
    assert secrets_read_by(synth, ops) == {ids["reader"][1]}
    assert secrets_read_by(synth, setup) == {ids["master"][1], ids["etl"][1], ids["reader"][1]}
    # No other role or policy of the stack names the master secret.
    for policy_id, policy in synth.resources("AWS::IAM::Policy").items():
        text = json.dumps(policy["Properties"]["PolicyDocument"])
        if any(name in text for name in master):
            assert policy_id.startswith("DbAccessSetupPolicy"), policy_id


def test_setup_and_ops_jobs_run_the_db_access_script_like_the_etl_job(synth: Synth) -> None:
    _, etl = synth.etl_job()
    ids = secret_ids(synth)
    artifacts = ref(bucket_ids(synth)["StorageArtifactsBucket"])
    expected_args = {
        "DbAccessSetupJob": {"--TASK": "setup", "--MASTER_SECRET_ARN": ref(ids["master"][1]),
                             "--ETL_SECRET_ARN": ref(ids["etl"][1]), "--READER_SECRET_ARN": ref(ids["reader"][1])},
        "DbAccessOpsJob": {"--TASK": "ops", "--READER_SECRET_ARN": ref(ids["reader"][1]), "--REPORT_BUCKET": artifacts,
                           "--OPS_COMMAND": "runs"},
    }
    script_args = load_script().ARGS
    for fragment, args in expected_args.items():
        _, resource = job(synth, fragment)
        props = resource["Properties"]
        suffix = "db-setup" if "Setup" in fragment else "ops"
        assert props["Name"] == f"healthtech-etl-dev-{suffix}"
        assert props["Command"]["ScriptLocation"] == {"Fn::Join": ["", ["s3://", artifacts, "/glue/db_access.py"]]}
        for same in ("Connections", "MaxCapacity", "GlueVersion"):
            assert props.get(same) == etl["Properties"].get(same), same
        assert props["Command"]["PythonVersion"] == etl["Properties"]["Command"]["PythonVersion"] == "3.9"
        defaults = props["DefaultArguments"]
        assert defaults["--extra-py-files"] == etl["Properties"]["DefaultArguments"]["--extra-py-files"]
        assert {k: defaults[k] for k in args} == args
        assert defaults["--DB_SSLMODE"] == "verify-full"
        assert defaults["--DB_SSLROOTCERT"] == etl["Properties"]["DefaultArguments"]["--DB_SSLROOTCERT"]
        ours = {k[2:] for k in defaults if k.isupper() or k[2:].isupper()}
        assert ours <= set(script_args), ours - set(script_args)


def test_ops_job_writes_only_under_reports_ops(synth: Synth) -> None:
    _, ops = job(synth, "DbAccessOpsJob")
    statements = statements_of_role(synth, ops["Properties"]["Role"]["Fn::GetAtt"][0])
    puts = [s for s in statements if "s3:PutObject" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])]
    artifacts = get_att(bucket_ids(synth)["StorageArtifactsBucket"])
    assert [s["Resource"] for s in puts] == [{"Fn::Join": ["", [artifacts, "/reports/ops/*"]]}]
    _, setup = job(synth, "DbAccessSetupJob")
    setup_actions = {a for s in statements_of_role(synth, setup["Properties"]["Role"]["Fn::GetAtt"][0])
                     for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert not {a for a in setup_actions if a.startswith("s3:") and a != "s3:GetObject"}


def test_deploy_starts_the_setup_job_when_created_and_when_the_setup_code_changes(synth: Synth) -> None:
    setup_id, _ = job(synth, "DbAccessSetupJob")
    resource_id = find_id(synth, "Custom::AWS", "DbAccessRunSetupOnDeploy")
    resource = synth.template["Resources"][resource_id]
    for phase in ("Create", "Update"):
        parts = resource["Properties"][phase]["Fn::Join"][1]
        call = json.loads(rendered(resource["Properties"][phase]))
        assert (call["service"], call["action"]) == ("Glue", "startJobRun")
        assert call["parameters"] == {"JobName": "<ref>", "Arguments": {"--SETUP_VERSION": setup_version()}}
        assert [part for part in parts if not isinstance(part, str)] == [ref(setup_id)]
    assert "Delete" not in resource["Properties"]
    ids = secret_ids(synth)
    db_id, _ = synth.one("AWS::RDS::DBInstance")
    assert {db_id, setup_id, ids["etl"][1], ids["reader"][1]} <= set(resource["DependsOn"])
    policy_id = find_id(synth, "AWS::IAM::Policy", "DbAccessRunSetupOnDeployCustomResourcePolicy")
    statements = synth.template["Resources"][policy_id]["Properties"]["PolicyDocument"]["Statement"]
    assert [(s["Action"], json.dumps(s["Resource"])) for s in statements] == [
        ("glue:StartJobRun", json.dumps(statements[0]["Resource"]))]
    assert ref(setup_id) in statements[0]["Resource"]["Fn::Join"][1]


def test_setup_version_follows_the_setup_code() -> None:
    assert setup_version() == setup_version() and len(setup_version()) == 16
    import hashlib

    digest = hashlib.sha256()
    package = REPO / "src" / "healthtech_etl"
    for path in (package / "db_roles.py", package / "glue_args.py", REPO / "glue_job" / "db_access.py"):
        digest.update(path.read_bytes())
    assert setup_version() == digest.hexdigest()[:16]


def test_access_findings_are_acknowledged_one_by_one(synth: Synth) -> None:
    ours = [(path, rule) for path, rule, _ in synth.acknowledged if "/DbAccess/" in path or "Secret" in path]
    assert ("HealthTechEtl-dev/DbAccess/OpsPolicy", "AwsSolutions-IAM5[Resource::<"
            + bucket_ids(synth)["StorageArtifactsBucket"] + ".Arn>/reports/ops/*]") in ours
    for secret in ("EtlSecret", "ReaderSecret"):
        assert (f"HealthTechEtl-dev/Database/{secret}", "AwsSolutions-SMG4") in ours
    assert not [rule for _, rule in ours if "Action::" in rule]  # no wildcard actions


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("db_access_script", Path(REPO / "glue_job" / "db_access.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
