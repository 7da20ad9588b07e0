"""lambda/resolve_inputs.py against moto S3: which pair it pins, that it claims a pair once, the capacity."""

from typing import Any

import pytest
from awsenv import RAW_BUCKET, REGION, REPORT_BUCKET, resolve_inputs

EXECUTION = "arn:aws:states:eu-west-1:123456789012:execution:healthtech-etl:etl-doctors-1"
EVENT = {"action": "resolve", "final": False, "execution": EXECUTION,
         "input": {"bucket": RAW_BUCKET, "source": "clinic-a", "export": "2025-10", "folder": "raw/clinic-a/2025-10/"}}


@pytest.fixture
def buckets(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for bucket in (RAW_BUCKET, REPORT_BUCKET):
        aws.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    aws.s3.put_bucket_versioning(Bucket=RAW_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    monkeypatch.setenv("CLAIM_BUCKET", REPORT_BUCKET)
    monkeypatch.delenv("CLAIM_PREFIX", raising=False)
    monkeypatch.delenv("LARGE_INPUT_BYTES", raising=False)
    return aws


def put(aws: Any, key: str, body: bytes, bucket: str = RAW_BUCKET) -> str:
    return aws.s3.put_object(Bucket=bucket, Key=key, Body=body).get("VersionId") or "null"


def test_pins_the_latest_versions_and_claims_the_pair_once(buckets: Any) -> None:
    put(buckets, "raw/clinic-a/2025-10/doctors.xlsx", b"d1")
    doctors = put(buckets, "raw/clinic-a/2025-10/doctors.xlsx", b"d2-newer")
    appointments = put(buckets, "raw/clinic-a/2025-10/appointments.xlsx", b"a1")

    first = resolve_inputs.handler(dict(EVENT), None)
    second = resolve_inputs.handler({**EVENT, "execution": "other"}, None)
    assert first["export_date"] == "2025-10-01" and first["source"] == "clinic-a"
    assert first["result_key"] == "reports/_executions/etl-doctors-1.json"

    assert first["action"] == "run" and second["action"] == "skip"
    assert (first["doctors_version"], first["appointments_version"]) == (doctors, appointments)
    assert first["pair_id"] == second["pair_id"] and len(first["pair_id"]) == 40
    assert first["input_bytes"] == len(b"d2-newer") + len(b"a1")
    assert first["claim_key"] == f"runs/claims/{first['pair_id']}.json" and second["claim_key"] == ""
    claim = buckets.s3.get_object(Bucket=REPORT_BUCKET, Key=first["claim_key"])["Body"].read()
    assert b'"execution": "arn:aws:states' in claim and doctors.encode() in claim  # the first claimant's
    # A new version of either workbook is a new pair.
    put(buckets, "raw/clinic-a/2025-10/appointments.xlsx", b"a2")
    assert resolve_inputs.handler(dict(EVENT), None)["action"] == "run"


def test_missing_partner_waits_then_is_missing_with_the_metric(buckets: Any) -> None:
    put(buckets, "raw/clinic-a/2025-10/doctors.xlsx", b"d1")

    result = resolve_inputs.handler(dict(EVENT), None)

    assert result["action"] == "wait" and result["pair_id"] == ""
    assert result["reason"] == f"waiting for s3://{RAW_BUCKET}/raw/clinic-a/2025-10/appointments.xlsx"
    assert buckets.s3.list_objects_v2(Bucket=REPORT_BUCKET).get("KeyCount", 0) == 0
    assert buckets.cloudwatch.list_metrics(Namespace="HealthTechETL")["Metrics"] == []
    # The final look after the wait: still alone -> "missing" and the alarmed metric.
    final = resolve_inputs.handler({**EVENT, "final": True}, None)
    assert final["action"] == "missing" and final["reason"].startswith("export still missing its partner")
    (metric,) = buckets.cloudwatch.list_metrics(Namespace="HealthTechETL")["Metrics"]
    assert metric["MetricName"] == "ExportsMissingPartner" and metric.get("Dimensions", []) == []


def test_unversioned_bucket_tells_uploads_apart_by_etag_and_time(buckets: Any) -> None:
    bucket = "healthtech-unversioned"
    buckets.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    put(buckets, "raw/clinic-a/2025-10/doctors.xlsx", b"d1", bucket)
    put(buckets, "raw/clinic-a/2025-10/appointments.xlsx", b"a1", bucket)
    event = {**EVENT, "input": {**EVENT["input"], "bucket": bucket}}

    first = resolve_inputs.handler(event, None)
    put(buckets, "raw/clinic-a/2025-10/doctors.xlsx", b"d2", bucket)
    second = resolve_inputs.handler(event, None)

    assert first["doctors_version"] == "null" and first["action"] == second["action"] == "run"
    assert first["pair_id"] != second["pair_id"]


@pytest.mark.parametrize(("size", "limit", "dpu"), [(10, 10, 0.0625), (11, 10, 1.0), (0, 10, 0.0625)])
def test_capacity_is_one_dpu_only_above_the_limit(size: int, limit: int, dpu: float) -> None:
    assert resolve_inputs.max_capacity(size, limit) == dpu


def test_default_limit_is_16_mib(buckets: Any) -> None:
    put(buckets, "raw/clinic-a/2025-10/doctors.xlsx", b"d")
    put(buckets, "raw/clinic-a/2025-10/appointments.xlsx", b"a")

    assert resolve_inputs._settings({"CLAIM_BUCKET": "b"})["limit"] == 16 * 1024 * 1024
    assert resolve_inputs.handler(dict(EVENT), None)["max_capacity"] == 0.0625


@pytest.mark.parametrize(("environ", "message"), [
    ({}, "CLAIM_BUCKET is not set"),
    ({"CLAIM_BUCKET": "b", "LARGE_INPUT_BYTES": "16MB"}, "LARGE_INPUT_BYTES='16MB' is not a whole number"),
])
def test_bad_configuration_is_a_clear_error(environ: dict, message: str) -> None:
    with pytest.raises(resolve_inputs.ResolveError, match=message):
        resolve_inputs._settings(environ)


def test_input_without_keys_is_a_clear_error(buckets: Any) -> None:
    with pytest.raises(resolve_inputs.ResolveError, match="lacks 'folder'"):
        resolve_inputs.handler({"input": {"bucket": RAW_BUCKET, "source": "a", "export": "b"}}, None)
    with pytest.raises(resolve_inputs.ResolveError, match="unknown action 'nope'"):
        resolve_inputs.handler({"action": "nope"}, None)


def test_access_errors_are_raised_not_taken_for_a_missing_workbook(buckets: Any) -> None:
    with pytest.raises(Exception, match="NoSuchBucket"):
        resolve_inputs.handler({**EVENT, "input": {**EVENT["input"], "bucket": "healthtech-no-such-bucket"}}, None)



def test_names_match_case_insensitively_and_only_in_the_folder(buckets: Any) -> None:
    put(buckets, "raw/clinic-a/2025-10/Doctors.XLSX", b"d")
    put(buckets, "raw/clinic-a/2025-10/old/appointments.xlsx", b"not this one: a sub-folder")
    put(buckets, "raw/clinic-a/2025-10/APPOINTMENTS.xlsx", b"a")

    result = resolve_inputs.handler(dict(EVENT), None)

    assert result["action"] == "run"
    assert (result["doctors_key"], result["appointments_key"]) == (
        "raw/clinic-a/2025-10/Doctors.XLSX", "raw/clinic-a/2025-10/APPOINTMENTS.xlsx")


def test_two_spellings_of_one_workbook_are_an_error(buckets: Any) -> None:
    put(buckets, "raw/clinic-a/2025-10/doctors.xlsx", b"d")
    put(buckets, "raw/clinic-a/2025-10/Doctors.xlsx", b"d2")
    with pytest.raises(resolve_inputs.ResolveError, match="two doctors.xlsx workbooks"):
        resolve_inputs.handler(dict(EVENT), None)


def test_a_failed_run_releases_its_claim_and_a_rerun_can_take_over(buckets: Any) -> None:
    put(buckets, "raw/clinic-a/2025-10/doctors.xlsx", b"d")
    put(buckets, "raw/clinic-a/2025-10/appointments.xlsx", b"a")
    first = resolve_inputs.handler(dict(EVENT), None)
    # Another execution may not release it; the holder may.
    other = resolve_inputs.handler({"action": "release", "claim_key": first["claim_key"], "execution": "x"}, None)
    assert other["released"] is False
    assert resolve_inputs.handler({**EVENT, "execution": "again"}, None)["action"] == "skip"
    released = resolve_inputs.handler({"action": "release", "claim_key": first["claim_key"],
                                       "execution": EXECUTION}, None)
    assert released["released"] is True
    assert resolve_inputs.handler({**EVENT, "execution": "again"}, None)["action"] == "run"
    # A re-run of the holder (timed out, aborted: nothing released) takes its claim over; others may not.
    rerun = {**EVENT, "execution": "rerun", "input": {**EVENT["input"], "rerun_of": "again"}}
    assert resolve_inputs.handler(rerun, None)["action"] == "run"
    stranger = {**EVENT, "execution": "s", "input": {**EVENT["input"], "rerun_of": "not-the-holder"}}
    assert resolve_inputs.handler(stranger, None)["action"] == "skip"


@pytest.mark.parametrize(("export", "expected"), [
    ("2025-10", "2025-10-01"), ("2025-10-31 evening", "2025-10-31"), ("2025-13", None), ("october", None)])
def test_export_date_from_the_folder_else_the_later_upload(export: str, expected: Any) -> None:
    heads = [{"modified": "2025-11-03T09:15:02+00:00"}, {"modified": "2025-11-04T10:00:00+00:00"}]
    assert resolve_inputs.export_date(export, heads) == (expected or "2025-11-04")
