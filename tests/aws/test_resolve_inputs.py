"""lambda/resolve_inputs.py against moto S3: which pair it pins, that it claims a pair once, the capacity."""

from typing import Any

import pytest
from awsenv import RAW_BUCKET, REGION, REPORT_BUCKET, resolve_inputs

EVENT = {"bucket": RAW_BUCKET, "doctors_key": "raw/doctors.xlsx", "appointments_key": "raw/appointments.xlsx",
         "execution": "arn:aws:states:eu-west-1:123456789012:execution:healthtech-etl:etl-doctors-1"}


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
    put(buckets, "raw/doctors.xlsx", b"d1")
    doctors = put(buckets, "raw/doctors.xlsx", b"d2-newer")
    appointments = put(buckets, "raw/appointments.xlsx", b"a1")

    first = resolve_inputs.handler(dict(EVENT), None)
    second = resolve_inputs.handler({**EVENT, "execution": "other"}, None)

    assert first["action"] == "run" and second["action"] == "skip"
    assert (first["doctors_version"], first["appointments_version"]) == (doctors, appointments)
    assert first["pair_id"] == second["pair_id"] and len(first["pair_id"]) == 40
    assert first["input_bytes"] == len(b"d2-newer") + len(b"a1")
    claim = buckets.s3.get_object(Bucket=REPORT_BUCKET, Key=f"runs/claims/{first['pair_id']}.json")["Body"].read()
    assert b'"execution": "arn:aws:states' in claim and doctors.encode() in claim  # the first claimant's
    # A new version of either workbook is a new pair.
    put(buckets, "raw/appointments.xlsx", b"a2")
    assert resolve_inputs.handler(dict(EVENT), None)["action"] == "run"


def test_missing_partner_is_skipped_with_the_reason(buckets: Any) -> None:
    put(buckets, "raw/doctors.xlsx", b"d1")

    result = resolve_inputs.handler(dict(EVENT), None)

    assert result["action"] == "skip" and result["pair_id"] == ""
    assert result["reason"] == f"waiting for s3://{RAW_BUCKET}/raw/appointments.xlsx"
    assert buckets.s3.list_objects_v2(Bucket=REPORT_BUCKET).get("KeyCount", 0) == 0


def test_unversioned_bucket_tells_uploads_apart_by_etag_and_time(buckets: Any) -> None:
    bucket = "healthtech-unversioned"
    buckets.s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    put(buckets, "raw/doctors.xlsx", b"d1", bucket)
    put(buckets, "raw/appointments.xlsx", b"a1", bucket)
    event = {**EVENT, "bucket": bucket}

    first = resolve_inputs.handler(event, None)
    put(buckets, "raw/doctors.xlsx", b"d2", bucket)
    second = resolve_inputs.handler(event, None)

    assert first["doctors_version"] == "null" and first["action"] == second["action"] == "run"
    assert first["pair_id"] != second["pair_id"]


@pytest.mark.parametrize(("size", "limit", "dpu"), [(10, 10, 0.0625), (11, 10, 1.0), (0, 10, 0.0625)])
def test_capacity_is_one_dpu_only_above_the_limit(size: int, limit: int, dpu: float) -> None:
    assert resolve_inputs.max_capacity(size, limit) == dpu


def test_default_limit_is_16_mib(buckets: Any) -> None:
    put(buckets, "raw/doctors.xlsx", b"d")
    put(buckets, "raw/appointments.xlsx", b"a")

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
    with pytest.raises(resolve_inputs.ResolveError, match="lacks 'appointments_key'"):
        resolve_inputs.handler({"bucket": RAW_BUCKET, "doctors_key": "raw/doctors.xlsx"}, None)


def test_access_errors_are_raised_not_taken_for_a_missing_workbook(buckets: Any) -> None:
    with pytest.raises(Exception, match="NoSuchBucket"):
        resolve_inputs.handler({**EVENT, "bucket": "healthtech-no-such-bucket"}, None)

