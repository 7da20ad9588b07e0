"""The backfill offline: the deployed backfill definition (infra/asl/backfill_state_machine.asl.json)
on moto's Step Functions - PlanBackfill (lambda/backfill_plan.py, in-process) -> Distributed Map
over the clinics (ItemReader on the plan in S3) -> per clinic an inline Map, one export at a time
-> glue:startJobRun.sync (the real Glue script, real PostgreSQL). The result must equal a
sequential local merge of the same files, clinic by clinic, month by month.

Glue job run queuing is modelled by the Glue stand-in: runs beyond the one executing wait for it
(moto's Distributed Map runs clinics on threads; the in-process script must not overlap itself).
"""

import datetime as dt
import io
import json
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from awsenv import (
    ACCOUNT,
    AS_OF,
    JOB_NAME,
    RAW_BUCKET,
    REGION,
    REPORT_BUCKET,
    REPORT_PREFIX,
    SECRET_NAME,
    db_secret,
    load_module,
)
from helpers import APPOINTMENTS_HEADER, DOCTORS_HEADER, fetch, write_xlsx

from healthtech_etl.db import DbConfig, connect

REPO = Path(__file__).resolve().parents[2]
ASL_PATH = REPO / "infra" / "asl" / "backfill_state_machine.asl.json"
backfill_plan = load_module("healthtech_backfill_plan", REPO / "lambda" / "backfill_plan.py")
PLANNER_NAME = "healthtech-etl-backfill-plan"
CLINICS = ("clinic-a", "clinic-b")
MONTHS = (1, 2, 3, 4, 5, 6)
# Upload order is not date order: the plan must sort by the folder's date.
UPLOAD_ORDER = (4, 1, 6, 2, 5, 3)
RUN_COLUMNS = ("run_id", "loaded_at", "changed_at", "created_at", "updated_at", "valid_from", "valid_to",
               "recorded_at")


def definition(job_name: str, topic_arn: str, planner_arn: str) -> str:
    text = ASL_PATH.read_text(encoding="utf-8")
    for placeholder, value in {"${GlueJobName}": job_name, "${AlertTopicArn}": topic_arn,
                               "${PlanBackfillFunctionArn}": planner_arn, "${Partition}": "aws"}.items():
        assert placeholder in text, f"{ASL_PATH.name} lacks {placeholder}"
        text = text.replace(placeholder, value)
    assert "${" not in text, f"{ASL_PATH.name} has a placeholder the test does not know"
    return text


def export_rows(clinic: int, month: int) -> tuple:
    """Doctors and appointments of one monthly export. Both clinics use the same ids (100-103 and
    1-...) for different people; each month cancels one earlier booking, moves one, adds four."""
    doctors = [(100 + i, f"Dr. {'AB'[clinic]}{i} Month{month}" if i == 0 else f"Dr. {'AB'[clinic]}{i}",
                ("cardiology", "pediatrics", "neurology", "dermatology")[(i + clinic) % 4]) for i in range(4)]
    appointments = []
    for m in range(1, month + 1):
        for k in range(4):
            booking = (m - 1) * 4 + k + 1
            status = "confirmed" if (booking + clinic) % 3 else "cancelled"
            if m < month and k == month % 4:
                status = "cancelled" if status == "confirmed" else "confirmed"
            day = 3 + k * 5 + (1 if m < month and k == 1 else 0)
            appointments.append((booking, 30 + booking % 7 + clinic, 100 + (booking + clinic) % 4,
                                 dt.datetime(2025, m, day, 9 + k), status))
    return doctors, appointments


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``{(clinic, month): (doctors.xlsx, appointments.xlsx)}``, written once."""
    root = tmp_path_factory.mktemp("backfill-exports")
    files = {}
    for index, clinic in enumerate(CLINICS):
        for month in MONTHS:
            doctors, appointments = export_rows(index, month)
            folder = root / clinic / f"2025-{month:02d}"
            files[(clinic, month)] = (write_xlsx(folder / "doctors.xlsx", DOCTORS_HEADER, doctors),
                                      write_xlsx(folder / "appointments.xlsx", APPOINTMENTS_HEADER, appointments))
    return files


@pytest.fixture
def backfill(moto_sfn: None, aws: Any, db_config: DbConfig, glue_runner: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What the stack deploys for a backfill, in moto: raw and artifacts buckets, DB secret, the Glue
    job (queuing on, 10 runs), alert topic (read back through SQS), the planner, the state machine."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    aws.s3.create_bucket(Bucket=RAW_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    aws.s3.put_bucket_versioning(Bucket=RAW_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    aws.s3.create_bucket(Bucket=REPORT_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    secret_arn = aws.secrets.create_secret(Name=SECRET_NAME, SecretString=json.dumps(db_secret(db_config)))["ARN"]
    aws.glue.create_job(
        Name=JOB_NAME, Role=f"arn:aws:iam::{ACCOUNT}:role/healthtech-etl-glue",
        Command={"Name": "pythonshell", "ScriptLocation": "s3://assets/glue_etl.py", "PythonVersion": "3.9"},
        DefaultArguments={"--DB_SECRET_ARN": secret_arn, "--REPORT_BUCKET": REPORT_BUCKET,
                          "--REPORT_PREFIX": REPORT_PREFIX, "--AS_OF": AS_OF, "--DB_SSLMODE": "require"},
        ExecutionProperty={"MaxConcurrentRuns": 10}, JobRunQueuingEnabled=True, MaxCapacity=0.0625,
    )
    queued = threading.Lock()
    run = glue_runner.run
    glue_runner.run = lambda arguments: _serialised(queued, run, arguments)
    topic_arn = aws.sns.create_topic(Name="healthtech-etl-alerts")["TopicArn"]
    queue_url = aws.sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    role = aws.iam.create_role(RoleName="backfill-plan", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("backfill_plan.py", "# runs in-process in the tests\n")
    planner_arn = aws.lambda_.create_function(FunctionName=PLANNER_NAME, Runtime="python3.14", Role=role,
                                              Handler="backfill_plan.handler", Code={"ZipFile": package.getvalue()},
                                              )["FunctionArn"]
    for name, value in {"RAW_BUCKET": RAW_BUCKET, "RAW_PREFIX": "raw/", "MANIFEST_BUCKET": REPORT_BUCKET,
                        "MANIFEST_PREFIX": "backfills/"}.items():
        monkeypatch.setenv(name, value)
    plans: list = []

    def invoke(self: Any, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: Any) -> bytes:
        assert function_name.rsplit(":", 1)[-1] == PLANNER_NAME, function_name
        try:
            plans.append(backfill_plan.handler(json.loads(body), None))
        except Exception as exc:  # what the Lambda runtime reports for an unhandled exception
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
        return json.dumps(plans[-1]).encode()

    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
    machine = aws.sfn.create_state_machine(name="healthtech-etl-backfill",
                                           definition=definition(JOB_NAME, topic_arn, planner_arn),
                                           roleArn=f"arn:aws:iam::{ACCOUNT}:role/healthtech-etl-backfill")

    def alerts() -> list:
        messages = aws.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        return [json.loads(message["Body"]) for message in messages.get("Messages", [])]

    def start(execution_input: dict) -> dict:
        arn = aws.sfn.start_execution(stateMachineArn=machine["stateMachineArn"], name="backfill-1",
                                      input=json.dumps(execution_input))["executionArn"]
        return aws.sfn.describe_execution(executionArn=arn)

    return SimpleNamespace(aws=aws, db_config=db_config, glue=glue_runner, plans=plans, alerts=alerts, start=start)


def _serialised(lock: threading.Lock, run: Any, arguments: dict) -> tuple:
    with lock:
        return run(arguments)


def upload(aws: Any, exports: dict) -> None:
    for clinic in CLINICS:
        for month in UPLOAD_ORDER:
            doctors, appointments = exports[(clinic, month)]
            folder = f"raw/{clinic}/2025-{month:02d}/"
            aws.s3.put_object(Bucket=RAW_BUCKET, Key=folder + "doctors.xlsx", Body=doctors.read_bytes())
            aws.s3.put_object(Bucket=RAW_BUCKET, Key=folder + "appointments.xlsx", Body=appointments.read_bytes())


def data_tables(config: DbConfig) -> dict:
    """Every row of the data tables, without the columns that name a run or a time of loading."""
    tables = {}
    for table in ("doctors", "appointments", "appointment_history"):
        columns = [row[0] for row in fetch(config, "SELECT column_name FROM information_schema.columns WHERE "
                                                   "table_schema = 'healthtech' AND table_name = :t ORDER BY "
                                                   "ordinal_position", t=table)
                   if row[0] not in RUN_COLUMNS]
        if table == "appointment_history":  # which version is current, not when it was loaded
            columns.append("valid_to IS NULL AS current")
        order = ", ".join(str(n) for n in range(1, len(columns) + 1))
        tables[table] = (columns, fetch(config, f"SELECT {', '.join(columns)} FROM healthtech.{table} ORDER BY {order}"))
    return tables


def sequential_local_merge(config: DbConfig, exports: dict, work: Path) -> None:
    """The reference: the package's run_etl in merge mode, clinic by clinic, month by month."""
    from healthtech_etl.pipeline import EtlSettings, InputFile, run_etl

    for clinic in CLINICS:
        for month in MONTHS:
            doctors, appointments = exports[(clinic, month)]
            settings = EtlSettings(as_of=dt.date.fromisoformat(AS_OF), report_dir=work / f"{clinic}-{month}",
                                   log_dir=None, mode="merge", source=clinic, export_date=dt.date(2025, month, 1))
            result = run_etl(InputFile(path=doctors, name=doctors.name), InputFile(path=appointments,
                             name=appointments.name), config, settings)
            assert result.exit_code == 0, (clinic, month, result)


@pytest.fixture
def reference_db(pg_server: DbConfig) -> Any:
    name = "backfill_reference"
    admin = connect(pg_server)
    try:
        admin.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.run(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    yield pg_server.with_database(name)
    admin = connect(pg_server)
    try:
        admin.run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.close()


def test_backfill_of_two_clinics_equals_a_sequential_local_merge(backfill: Any, exports: dict, reference_db: DbConfig,
                                                                  tmp_path: Path) -> None:
    upload(backfill.aws, exports)

    execution = backfill.start({})

    assert execution["status"] == "SUCCEEDED", execution
    (plan,) = backfill.plans
    assert (plan["clinics"], plan["exports"], plan["skipped"]) == (2, 12, [])
    # Each clinic's runs in date order (not upload order), each in merge mode with its source and date.
    calls = [call.arguments for call in backfill.glue.calls]
    assert all(call["--LOAD_MODE"] == "merge" for call in calls) and len(calls) == 12
    for clinic in CLINICS:
        runs = [call for call in calls if call["--source"] == clinic]
        assert [call["--export_date"] for call in runs] == [f"2025-{m:02d}-01" for m in MONTHS]
        assert [call["--DOCTORS_KEY"] for call in runs] == [f"raw/{clinic}/2025-{m:02d}/doctors.xlsx" for m in MONTHS]
    assert [call.exit_code for call in backfill.glue.calls] == [0] * 12
    loaded = fetch(backfill.db_config, "SELECT source, mode, status, export_date FROM healthtech.etl_runs "
                                       "ORDER BY source, export_date")
    assert loaded == [[clinic, "merge", "succeeded", dt.date(2025, m, 1)] for clinic in CLINICS for m in MONTHS]
    assert backfill.alerts() == []

    sequential_local_merge(reference_db, exports, tmp_path)
    backfilled, reference = data_tables(backfill.db_config), data_tables(reference_db)
    assert backfilled == reference
    # Not trivially equal: both clinics under the same ids, six months of changes in the history.
    columns, doctors = backfilled["doctors"]
    by_id = {}
    for row in doctors:
        by_id.setdefault(row[columns.index("id")], set()).add(row[columns.index("source")])
    assert by_id == {100 + i: set(CLINICS) for i in range(4)}
    columns, appointments = backfilled["appointments"]
    assert sorted(row[columns.index("source")] for row in appointments) == ["clinic-a"] * 24 + ["clinic-b"] * 24
    columns, history = backfilled["appointment_history"]
    assert len(history) > len(appointments) and sum(row[-1] for row in history) == len(appointments)


def test_a_failed_export_stops_its_clinic_only_and_alerts(backfill: Any, exports: dict) -> None:
    upload(backfill.aws, exports)
    # clinic-a's March export is broken: its April-June must not load; clinic-b loads fully.
    backfill.aws.s3.put_object(Bucket=RAW_BUCKET, Key="raw/clinic-a/2025-03/appointments.xlsx", Body=b"not a workbook")

    execution = backfill.start({})

    assert execution["status"] == "FAILED"
    runs = fetch(backfill.db_config, "SELECT source, export_date FROM healthtech.etl_runs WHERE status = 'succeeded' "
                                     "ORDER BY source, export_date")
    assert runs == ([["clinic-a", dt.date(2025, m, 1)] for m in (1, 2)]
                    + [["clinic-b", dt.date(2025, m, 1)] for m in MONTHS])
    (alert,) = backfill.alerts()
    (failed,) = alert["failure"]["failed_clinics"]
    assert failed["source"] == "clinic-a" and failed["status"] == "failed"
    assert failed["error"] == "States.TaskFailed" and "exit 3" in failed["cause"]


def test_a_backfill_of_named_clinics_only(backfill: Any, exports: dict) -> None:
    upload(backfill.aws, exports)

    execution = backfill.start({"sources": ["clinic-b"]})

    assert execution["status"] == "SUCCEEDED"
    assert {call.arguments["--source"] for call in backfill.glue.calls} == {"clinic-b"}
    assert len(backfill.glue.calls) == 6


def test_an_unknown_clinic_fails_the_plan_and_alerts(backfill: Any, exports: dict) -> None:
    upload(backfill.aws, exports)

    execution = backfill.start({"sources": ["clinic-z"]})

    assert execution["status"] == "FAILED" and backfill.glue.calls == []
    (alert,) = backfill.alerts()
    assert alert["failure"]["Error"] == "PlanError"
    assert "no loadable export under raw/<source>/<export>/ for: clinic-z" in alert["failure"]["Cause"]


# --------------------------------------------------------------------------- the plan (no AWS)


@pytest.mark.parametrize("name", ["2025-03", "2025-03-15", "2025-03-15-late", "2025-03_rerun", "2025-13", "2025-02-30",
                                  "2025-3", "march-2025", "", "20250315", "2025-03-1", "0000-01"])
def test_the_planners_export_date_rule_is_the_packages(name: str) -> None:
    from healthtech_etl import exports

    assert backfill_plan.export_date_from_folder(name) == exports.export_date_from_folder(name)


def test_the_planners_source_rule_is_the_packages() -> None:
    from healthtech_etl import exports

    assert backfill_plan.SOURCE_PATTERN.pattern == exports.SOURCE_PATTERN.pattern


def _obj(key: str, day: int, size: int = 100, version: str = "v") -> dict:
    return {"Key": key, "VersionId": f"{version}-{key}", "Size": size,
            "LastModified": dt.datetime(2025, 7, day, 12, tzinfo=dt.timezone.utc)}


def test_the_plan_orders_dates_and_skips_what_is_not_a_loadable_export() -> None:
    objects = [
        _obj("raw/clinic-a/2025-02/Doctors.XLSX", 1), _obj("raw/clinic-a/2025-02/appointments.xlsx", 1),
        _obj("raw/clinic-a/2025-01-20/doctors.xlsx", 2), _obj("raw/clinic-a/2025-01-20/appointments.xlsx", 2),
        # No date in the name: the later upload's day.
        _obj("raw/clinic-a/latest/doctors.xlsx", 3), _obj("raw/clinic-a/latest/appointments.xlsx", 9, size=2000),
        _obj("raw/clinic-a/2025-03/doctors.xlsx", 4),  # partner missing
        _obj("raw/Clinic B/2025-01/doctors.xlsx", 4), _obj("raw/Clinic B/2025-01/appointments.xlsx", 4),
        _obj("raw/clinic-c/2025-01/doctors.xlsx", 5), _obj("raw/clinic-c/2025-01/DOCTORS.xlsx", 5),
        _obj("raw/clinic-c/2025-01/appointments.xlsx", 5),
        _obj("raw/doctors.xlsx", 5), _obj("raw/clinic-a/2025-02/notes.txt", 5),  # not export files: ignored
    ]

    clinics, skipped = backfill_plan.plan(objects, RAW_BUCKET, "raw/", limit=1000)

    (clinic,) = clinics
    assert clinic["source"] == "clinic-a"
    assert [(e["export"], e["export_date"], e["date_from"]) for e in clinic["exports"]] == [
        ("2025-01-20", "2025-01-20", "folder"), ("2025-02", "2025-02-01", "folder"),
        ("latest", "2025-07-09", "upload_time")]
    first = clinic["exports"][1]
    assert (first["doctors_key"], first["doctors_version"]) == ("raw/clinic-a/2025-02/Doctors.XLSX",
                                                                "v-raw/clinic-a/2025-02/Doctors.XLSX")
    assert [e["max_capacity"] for e in clinic["exports"]] == [0.0625, 0.0625, 1.0]
    assert skipped == [{"folder": "raw/Clinic B/2025-01/", "reason": "invalid_source"},
                       {"folder": "raw/clinic-a/2025-03/", "reason": "missing_appointments"},
                       {"folder": "raw/clinic-c/2025-01/", "reason": "ambiguous_workbook_names"}]


@pytest.mark.parametrize("execution_input", [[], {"sources": "clinic-a"}, {"sources": ["Clinic A"]}])
def test_a_malformed_request_is_refused(execution_input: Any) -> None:
    with pytest.raises(backfill_plan.PlanError):
        backfill_plan._requested_sources(execution_input)
