"""The data quality report: five metrics over the appointments read, each judged against the warning
and critical levels of the quality contract (:mod:`.contract`); the console summary and the verdict."""

from typing import TYPE_CHECKING, Any, Optional

from .contract import Contract
from .redact import safe_text

if TYPE_CHECKING:  # clean imports pandas: the CLI starts without it
    from .clean import CleanResult

OK, WARNING, CRITICAL = "ok", "warning", "critical"
SEVERITY_ORDER = {OK: 0, WARNING: 1, CRITICAL: 2}
FAIL_ON_CHOICES = ("never", WARNING, CRITICAL)
CAUSES_IN_VERDICT = 3
VALUE_CHARS = 60  # a workbook value in a console line or the verdict (already escaped in the report)
NO_VALUES_SHOWN = ("patient_id",)  # the verdict is on the HTML page: no patient ids in it


def _percent(part: int, whole: int) -> float:
    """Percentage with 2 decimals; an empty denominator means nothing failed (100 %)."""
    return round(100.0 * part / whole, 2) if whole else 100.0


def level_status(value: float, alert_below: bool, warning: Optional[float], critical: Optional[float]) -> str:
    """critical, warning or ok: the worst level ``value`` is beyond (exactly at a level is not beyond)."""
    def beyond(level: Optional[float]) -> bool:
        return level is not None and (value < level if alert_below else value > level)

    return CRITICAL if beyond(critical) else WARNING if beyond(warning) else OK


def compute_metrics(appointments: "CleanResult", contract: Optional[Contract] = None) -> dict[str, dict[str, Any]]:
    """``{key: {value, threshold (the warning level), critical_threshold, alert_when, status, description}}``."""
    stats = appointments.stats
    values = {
        "id_completeness": _percent(stats["ids_complete"], stats["read"]),
        "referential_integrity": _percent(stats["doctor_known"], stats["doctor_id_valid"]),
        "duplicate_rate": _percent(stats["exact_duplicates"], stats["read"]),
        "typing_success": _percent(stats["dates_parsed"], stats["dates_non_empty"]),
        "acceptance_rate": _percent(len(appointments.valid), stats["read"]),
    }
    return {metric.key: {"value": values[metric.key], "threshold": metric.warning,
                         "critical_threshold": metric.critical,
                         "alert_when": "below" if metric.alert_below else "above",
                         "status": level_status(values[metric.key], metric.alert_below, metric.warning, metric.critical),
                         "description": metric.description}
            for metric in (contract or Contract()).metrics}


def overall_status(metrics: dict[str, dict[str, Any]], checks: Optional[list[dict[str, Any]]] = None) -> str:
    """The worst status among the metrics and the contract's column checks."""
    statuses = [m["status"] for m in metrics.values()] + [c["status"] for c in checks or []]
    return max(statuses, key=SEVERITY_ORDER.__getitem__, default=OK)


def gate_tripped(status: str, fail_on: str) -> bool:
    """True when ``--fail-on`` says a report of ``status`` must stop the run before loading."""
    return fail_on != "never" and SEVERITY_ORDER[status] >= SEVERITY_ORDER[fail_on]


def tripped_metrics(metrics: dict[str, dict[str, Any]], fail_on: str,
                    checks: Optional[list[dict[str, Any]]] = None) -> list[str]:
    """``["acceptance_rate 0.00 % < 75 (critical)", ...]``: each metric (and check) at or above ``fail_on``."""
    tripped = []
    for key, metric in metrics.items():
        status = metric["status"]
        if status == OK or not gate_tripped(status, fail_on):
            continue
        level = metric.get("critical_threshold") if status == CRITICAL else None
        level = metric["threshold"] if level is None else level
        sign = "<" if metric["alert_when"] == "below" else ">"
        tripped.append(f"{key} {metric['value']:.2f} % {sign} {level:g} ({status})")
    tripped += [f"{c['entity']}.{c['column']} {c['check']} {c['value']}, expected {c['expected']} ({c['status']})"
                for c in checks or [] if c["status"] != OK and gate_tripped(c["status"], fail_on)]
    return tripped


def _levels(metric: dict[str, Any]) -> str:
    sign = "<" if metric["alert_when"] == "below" else ">"
    levels = [f"{name} {sign} {level:g}" for name, level in
              (("warning", metric.get("threshold")), ("critical", metric.get("critical_threshold"))) if level is not None]
    return ", ".join(levels) or "no alert levels"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A readable summary of a report for the console and the log: the run, the verdict, the metrics
    and checks, the counts, one line per reason code with its offending values."""
    lines = [f"Run {report['run_id']} (as of {report['as_of']}): data quality {report['status'].upper()}",
             f"  {verdict(report)}"]
    for key, metric in report["metrics"].items():
        lines.append(f"  {key:<22} {metric['value']:>7.2f} %  {_levels(metric)}  [{metric['status']}]")
    for check in report.get("checks") or []:
        lines.append(f"  check {check['entity']}.{check['column']} {check['check']}: found {check['value']}, "
                     f"expected {check['expected']}  [{check['status']}]")
    for entity, counts in report["counts"].items():
        lines.append(f"  {entity:<22} read {counts['read']:>9,}  loaded {counts['loaded']:>9,}"
                     f"  rejected {counts['rejected']:>9,}")
    offending = report.get("offending")
    if offending is not None:
        lines += [f"  {entity} {code}: {_reason_line(info, report)}" for entity, codes in offending.items()
                  for code, info in codes.items()]
    elif report["rejections"]:
        lines.append("  rejections: " + ", ".join(f"{code}={n:,}" for code, n in report["rejections"].items()))
    if report.get("unknown_status_values"):
        # Free text from the workbook: cut and escaped (it may hold a patient's name or phone).
        values = ", ".join(f"'{safe_text(value)}'={n}" for value, n in report["unknown_status_values"].items())
        lines.append(f"  statuses loaded as 'unknown': {values}")
    return lines


def _rows(info: dict[str, Any]) -> str:
    first, last = info.get("first_row"), info.get("last_row")
    return f"row {first}" if first == last else f"rows {first}-{last}"


def _value(value: Any) -> str:
    return safe_text(value, VALUE_CHARS)


def _reason_line(info: dict[str, Any], report: dict[str, Any]) -> str:
    """``175 rows (rows 12-840); doctor_id 105 x175 (rows 12-840); ...``"""
    count = info.get("count") or 0
    parts = [f"{count:,} {'row' if count == 1 else 'rows'} ({_rows(info)})"]
    top = info.get("top_values") or []
    if top:
        parts.append(f"{info.get('column')} " + ", ".join(f"'{_value(v['value'])}' x{v['count']:,} ({_rows(v)})"
                                                         for v in top[:3]) + (", ..." if len(top) > 3 else ""))
    if info.get("date_range"):
        parts.append(_dates(info["date_range"]))
    if info.get("known_doctor_ids") is not None:
        parts.append(_known(info["known_doctor_ids"], report))
    return "; ".join(parts)


def _dates(dates: dict[str, Any]) -> str:
    text = (f"booking dates {dates.get('found_min')} .. {dates.get('found_max')}, allowed "
            f"{dates.get('allowed_min')} .. {dates.get('allowed_max')}")
    return text + (f", {dates['pattern']}" if dates.get("pattern") else "")


def _known(known: dict[str, Any], report: dict[str, Any]) -> str:
    """``doctors.xlsx holds 5 ids, 100-104``: the doctor ids ``unknown_doctor`` was judged against."""
    name = safe_text(((report.get("inputs") or {}).get("doctors") or {}).get("file") or "the doctors file", VALUE_CHARS)
    where = f"{name} and the database hold" if known.get("basis") == "doctors_in_file_and_database" else f"{name} holds"
    if not known.get("count"):
        return f"{where} no valid doctor id"
    ids = known["min"] if known["min"] == known["max"] else f"{known['min']}-{known['max']}"
    return f"{where} {known['count']:,} {'id' if known['count'] == 1 else 'ids'}, {ids}"


def _passed(counts: dict[str, Any]) -> int:
    """Rows that passed the rules (a run that loaded nothing keeps them in ``would_load``)."""
    return int(counts.get("would_load", counts.get("loaded")) or 0)


def verdict(report: dict[str, Any]) -> str:
    """One sentence: what was loaded (or why nothing was), the share, and the two or three reason
    codes behind most rejections with their offending values."""
    counts = report.get("counts") or {}
    appointments, doctors = counts.get("appointments") or {}, counts.get("doctors") or {}
    read, loaded = int(appointments.get("read") or 0), _passed(appointments)
    share = f" ({100.0 * loaded / read:.1f} %)" if read else ""
    what = (f"{loaded:,} of {read:,} appointments{share} and {_passed(doctors):,} of "
            f"{int(doctors.get('read') or 0):,} doctors")
    load_status = report.get("load_status")
    if load_status == "succeeded":
        head = f"Loaded {what}"
    elif load_status == "gated":
        fail_on = (report.get("settings") or {}).get("fail_on", "?")
        head = (f"Nothing loaded: data quality {str(report.get('status', '?')).upper()} stopped the run "
                f"(--fail-on {fail_on}); {what} had passed the rules")
    elif load_status == "failed":
        head = f"Nothing loaded: the load failed and was rolled back; {what} had passed the rules"
    elif load_status == "skipped":
        head = f"Nothing loaded: run {report.get('already_loaded_by')} loaded these files already; {what} pass the rules"
    else:
        head = f"Not loaded yet: {what} pass the rules"
    rejected = sum(int((entity or {}).get("rejected") or 0) for entity in counts.values())
    if not rejected:
        return f"{head}; no row was rejected."
    return f"{head}; {rejected:,} {'row' if rejected == 1 else 'rows'} rejected{_causes(report)}."


def _causes(report: dict[str, Any]) -> str:
    """``, mostly A (...) and B (...)``; ``for 9 reasons, the most frequent A (...), ...`` when the
    top causes are not most of them. Appointments first among equals (the file that is loaded)."""
    items = [(int(info.get("count") or 0), entity, code, info)
             for entity, codes in (report.get("offending") or {}).items() for code, info in (codes or {}).items()]
    if not items:  # a report from before the offending values
        items = [(int(count), "", code, {}) for code, count in (report.get("rejections") or {}).items()]
    items = sorted((item for item in items if item[0]), key=lambda item: (-item[0], item[1] == "doctors"))
    if not items:
        return ""
    top = items[:CAUSES_IN_VERDICT]
    parts = [_cause(*item, report) for item in top]
    listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    if 2 * sum(item[0] for item in top) >= sum(item[0] for item in items):
        return f", mostly {listed}"
    return f" for {len(items)} reasons, the most frequent {listed}"


def _cause(count: int, entity: str, code: str, info: dict[str, Any], report: dict[str, Any]) -> str:
    label = f"{code} in {entity}" if entity == "doctors" else code
    column, top = info.get("column"), info.get("top_values") or []
    if info.get("date_range"):
        detail = _dates(info["date_range"])
    elif top and column not in NO_VALUES_SHOWN:
        shown = ", ".join(_value(v["value"]) for v in top[:3])
        more = len(top) > 3 or sum(v["count"] for v in top) < count
        detail = f"{column} {shown}{', ...' if more else ''}"
        if info.get("known_doctor_ids") is not None:
            detail += "; " + _known(info["known_doctor_ids"], report)
    elif info.get("first_row") is not None:
        detail = f"spreadsheet {_rows(info)}"
    else:
        detail = ""
    return f"{label} ({count:,} {'row' if count == 1 else 'rows'}" + (f": {detail})" if detail else ")")
