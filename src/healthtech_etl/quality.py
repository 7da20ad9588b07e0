"""The data quality report: five metrics over the appointments read, with thresholds."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from .redact import safe_text

if TYPE_CHECKING:  # clean imports pandas: the CLI starts without it
    from .clean import CleanResult

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY_ORDER = {OK: 0, WARNING: 1, CRITICAL: 2}
FAIL_ON_CHOICES = ("never", WARNING, CRITICAL)


@dataclass(frozen=True)
class Metric:
    key: str
    description: str
    threshold: float
    alert_below: bool  # True: alert when value < threshold; False: when value > threshold
    severity: str
    critical_threshold: Optional[float] = None  # a second, critical level (below it: critical)


METRICS: tuple[Metric, ...] = (
    Metric("id_completeness", "% of rows whose patient_id and doctor_id are both present and valid",
           100.0, True, CRITICAL),
    Metric("referential_integrity", "% of rows with a valid doctor_id whose doctor exists", 95.0, True, WARNING),
    Metric("duplicate_rate", "% of rows removed as exact duplicates", 5.0, False, WARNING),
    Metric("typing_success", "% of non-empty booking_date values parsed into a date", 100.0, True, CRITICAL),
    # Every other metric can be perfect while nothing is loaded (all dates out of range, ...).
    Metric("acceptance_rate", "% of appointment rows read that were loaded", 90.0, True, WARNING, 50.0),
)


def _percent(part: int, whole: int) -> float:
    """Percentage with 2 decimals; an empty denominator means nothing failed (100 %)."""
    return round(100.0 * part / whole, 2) if whole else 100.0


def compute_metrics(appointments: "CleanResult") -> dict[str, dict[str, Any]]:
    """``{key: {value, threshold, alert_when, status, description[, critical_threshold]}}``."""
    stats = appointments.stats
    values = {
        "id_completeness": _percent(stats["ids_complete"], stats["read"]),
        "referential_integrity": _percent(stats["doctor_known"], stats["doctor_id_valid"]),
        "duplicate_rate": _percent(stats["exact_duplicates"], stats["read"]),
        "typing_success": _percent(stats["dates_parsed"], stats["dates_non_empty"]),
        "acceptance_rate": _percent(len(appointments.valid), stats["read"]),
    }
    metrics = {}
    for metric in METRICS:
        value = values[metric.key]
        breached = value < metric.threshold if metric.alert_below else value > metric.threshold
        status = metric.severity if breached else OK
        if metric.critical_threshold is not None and value < metric.critical_threshold:
            status = CRITICAL
        metrics[metric.key] = {"value": value, "threshold": metric.threshold,
                               "alert_when": "below" if metric.alert_below else "above", "status": status,
                               "description": metric.description}
        if metric.critical_threshold is not None:
            metrics[metric.key]["critical_threshold"] = metric.critical_threshold
    return metrics


def overall_status(metrics: dict[str, dict[str, Any]]) -> str:
    """The worst status among the metrics."""
    return max((m["status"] for m in metrics.values()), key=SEVERITY_ORDER.__getitem__, default=OK)


def gate_tripped(status: str, fail_on: str) -> bool:
    """True when ``--fail-on`` says a report of ``status`` must stop the run before loading."""
    return fail_on != "never" and SEVERITY_ORDER[status] >= SEVERITY_ORDER[fail_on]


def tripped_metrics(metrics: dict[str, dict[str, Any]], fail_on: str) -> list[str]:
    """``["acceptance_rate 0.00 % < 50 (critical)", ...]``: each metric at or above ``fail_on``."""
    tripped = []
    for key, metric in metrics.items():
        if not gate_tripped(metric["status"], fail_on) or metric["status"] == OK:
            continue
        critical = metric["status"] == CRITICAL and metric.get("critical_threshold") is not None
        threshold = metric["critical_threshold"] if critical else metric["threshold"]
        sign = "<" if metric["alert_when"] == "below" else ">"
        tripped.append(f"{key} {metric['value']:.2f} % {sign} {threshold:g} ({metric['status']})")
    return tripped


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A readable summary of a report for the console and the log."""
    lines = [f"Run {report['run_id']} (as of {report['as_of']}): data quality {report['status'].upper()}"]
    for key, metric in report["metrics"].items():
        sign = "<" if metric["alert_when"] == "below" else ">"
        critical = metric.get("critical_threshold")
        levels = f"{metric['threshold']:g}" + (f" (critical < {critical:g})" if critical is not None else "")
        lines.append(f"  {key:<22} {metric['value']:>7.2f} %  alert if {sign} {levels}  [{metric['status']}]")
    for entity, counts in report["counts"].items():
        lines.append(f"  {entity:<22} read {counts['read']:>9,}  loaded {counts['loaded']:>9,}"
                     f"  rejected {counts['rejected']:>9,}")
    if report["rejections"]:
        lines.append("  rejections: " + ", ".join(f"{code}={n:,}" for code, n in report["rejections"].items()))
    if report.get("unknown_status_values"):
        # Free text from the workbook: cut and escaped (it may hold a patient's name or phone).
        values = ", ".join(f"'{safe_text(value)}'={n}" for value, n in report["unknown_status_values"].items())
        lines.append(f"  statuses loaded as 'unknown': {values}")
    return lines
