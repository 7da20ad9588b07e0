import pandas as pd
import pytest

from healthtech_etl.clean import CleanResult
from healthtech_etl.quality import (
    compute_metrics,
    gate_tripped,
    overall_status,
    summary_lines,
    tripped_metrics,
)


def result(loaded=200, **stats):
    base = {"read": 200, "ids_complete": 200, "doctor_id_valid": 200, "doctor_known": 200, "exact_duplicates": 0,
            "dates_non_empty": 200, "dates_parsed": 200}
    base.update(stats)
    return CleanResult(valid=pd.DataFrame({"id": range(loaded)}), rejected=pd.DataFrame(), stats=base)


def test_all_clean_is_ok():
    metrics = compute_metrics(result())
    assert {k: (m["value"], m["status"]) for k, m in metrics.items()} == {
        "id_completeness": (100.0, "ok"),
        "referential_integrity": (100.0, "ok"),
        "duplicate_rate": (0.0, "ok"),
        "typing_success": (100.0, "ok"),
        "acceptance_rate": (100.0, "ok"),
    }
    assert overall_status(metrics) == "ok"


def test_values_thresholds_and_statuses():
    metrics = compute_metrics(result(ids_complete=199, doctor_id_valid=190, doctor_known=180, exact_duplicates=11,
                                     dates_non_empty=150, dates_parsed=150))
    assert metrics["id_completeness"]["value"] == 99.5
    assert metrics["id_completeness"]["status"] == "warning"  # one id missing in 200 rows: not critical
    assert metrics["referential_integrity"]["value"] == 94.74  # 180/190, 2 decimals
    assert metrics["referential_integrity"]["status"] == "warning"
    assert metrics["duplicate_rate"]["value"] == 5.5
    assert metrics["duplicate_rate"]["status"] == "warning"
    assert metrics["typing_success"]["status"] == "ok"
    assert overall_status(metrics) == "warning"
    worse = compute_metrics(result(ids_complete=189, doctor_known=179, exact_duplicates=41, dates_parsed=189))
    assert {key: m["status"] for key, m in worse.items()} == {  # each beyond its critical level
        "id_completeness": "critical", "referential_integrity": "critical", "duplicate_rate": "critical",
        "typing_success": "critical", "acceptance_rate": "ok"}
    assert overall_status(worse) == "critical"


def test_every_metric_reports_both_levels():
    for metric in compute_metrics(result()).values():
        assert metric["threshold"] is not None and metric["critical_threshold"] is not None


def test_threshold_edges_do_not_alert():
    metrics = compute_metrics(result(doctor_id_valid=100, doctor_known=95, exact_duplicates=10))
    assert metrics["referential_integrity"]["status"] == "ok"  # exactly 95 is not below 95
    assert metrics["duplicate_rate"]["status"] == "ok"  # exactly 5 is not above 5


def test_empty_denominator_counts_as_nothing_failed():
    metrics = compute_metrics(result(doctor_id_valid=0, doctor_known=0, dates_non_empty=0, dates_parsed=0))
    assert metrics["referential_integrity"]["value"] == 100.0
    assert metrics["typing_success"]["value"] == 100.0


@pytest.mark.parametrize("status, fail_on, tripped", [
    ("ok", "never", False), ("critical", "never", False), ("warning", "warning", True),
    ("critical", "warning", True), ("warning", "critical", False), ("critical", "critical", True), ("ok", "warning", False),
])
def test_quality_gate(status, fail_on, tripped):
    assert gate_tripped(status, fail_on) is tripped


def test_summary_is_readable():
    metrics = compute_metrics(result(ids_complete=150))
    report = {"run_id": "abc", "as_of": "2025-11-01", "status": overall_status(metrics), "metrics": metrics,
              "counts": {"appointments": {"read": 200, "loaded": 150, "rejected": 50}},
              "rejections": {"missing_patient_id": 50}, "unknown_status_values": {"pending": 2}}
    text = "\n".join(summary_lines(report))
    assert "data quality CRITICAL" in text
    assert "id_completeness" in text and "75.00 %" in text
    assert "missing_patient_id=50" in text
    assert "'pending'=2" in text


@pytest.mark.parametrize("loaded, value, status", [
    (200, 100.0, "ok"), (180, 90.0, "ok"), (179, 89.5, "warning"), (150, 75.0, "warning"), (149, 74.5, "critical"),
    (0, 0.0, "critical"),
])
def test_acceptance_rate_levels(loaded, value, status):
    metric = compute_metrics(result(loaded=loaded))["acceptance_rate"]
    assert (metric["value"], metric["status"]) == (value, status)
    assert metric["threshold"] == 90.0 and metric["critical_threshold"] == 75.0


def test_an_empty_load_is_critical_even_when_every_other_metric_is_perfect():
    metrics = compute_metrics(result(loaded=0))
    assert [key for key, m in metrics.items() if m["status"] != "ok"] == ["acceptance_rate"]
    assert overall_status(metrics) == "critical"


def test_tripped_metrics_name_value_and_threshold():
    metrics = compute_metrics(result(loaded=0, doctor_known=180))
    assert tripped_metrics(metrics, "critical") == ["acceptance_rate 0.00 % < 75 (critical)"]
    assert tripped_metrics(metrics, "warning") == [
        "referential_integrity 90.00 % < 95 (warning)", "acceptance_rate 0.00 % < 75 (critical)"]
    assert tripped_metrics(metrics, "never") == []


def test_unknown_statuses_are_cut_and_escaped_in_the_summary():
    metrics = compute_metrics(result())
    long_value = "Pending - call patient Jane Doe +1-555-0100\nFAKE LOG LINE" + "x" * 1_000_000
    report = {"run_id": "abc", "as_of": "2025-11-01", "status": "ok", "metrics": metrics, "counts": {},
              "rejections": {}, "unknown_status_values": {long_value: 1}}
    text = "\n".join(summary_lines(report))
    assert len(text) < 2000 and "555-0100" not in text and "FAKE LOG LINE" not in text
    assert "'Pending - call patient Jane Doe +1-555-0...(1000057 chars)'=1" in text
