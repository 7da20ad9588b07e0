"""The charts of ``quality_report.html``: Vega-Lite specs (drawn offline by the inlined vega
bundles) with their values written on the bars; trends by run order, one line per input file."""

from typing import Any, Optional

from .html_base import ReportPage, e, finite

APPOINTMENT_STATUS_COLORS = {"confirmed": "#2e7d32", "cancelled": "#c62828", "unknown": "#9e9e9e"}
DAY_LABELS_MAX = 45  # day totals are written on the per-day bars up to this many days (beyond: too dense)
NO_FILE = "(file not recorded)"


def chart(charts: list[dict[str, Any]], spec: dict[str, Any], label: str) -> str:
    """Queue ``spec`` for drawing; its placeholder in the page."""
    index = len(charts)
    charts.append(spec)
    return f'<figure class="chart" data-chart="{index}" aria-label="{e(label)}"></figure>'


def bar(values: list[dict[str, Any]], category: str, amount: str, title: str, color: str,
        domain: Optional[list[float]] = None, extra_tooltip: Optional[list[str]] = None,
        label_format: str = ",d") -> dict[str, Any]:
    """Horizontal bars, largest first, each with its value written at its end."""
    x: dict[str, Any] = {"field": amount, "type": "quantitative", "title": title}
    if domain:
        x["scale"] = {"domain": domain}
    else:  # counts: whole-number ticks only
        x["axis"] = {"tickMinStep": 1, "format": "d"}
    tooltip = [{"field": category, "type": "nominal"}, {"field": amount, "type": "quantitative"}]
    tooltip += [{"field": name, "type": "quantitative"} for name in extra_tooltip or []]
    ranked = sorted(values, key=lambda value: -(value.get(amount) or 0))  # stable: ties keep their order
    return {
        "width": 560, "height": {"step": 18}, "data": {"values": ranked},
        "encoding": {"y": {"field": category, "type": "nominal", "sort": None, "title": None,
                           "axis": {"labelLimit": 260}}, "x": x, "tooltip": tooltip},
        "layer": [{"mark": {"type": "bar", "color": color}},
                  {"mark": {"type": "text", "align": "left", "baseline": "middle", "dx": 3, "fontSize": 11},
                   "encoding": {"text": {"field": amount, "type": "quantitative", "format": label_format}}}],
    }


def status_color(values: list[dict[str, Any]]) -> dict[str, Any]:
    present = {v.get("status") for v in values}
    domain = [s for s in APPOINTMENT_STATUS_COLORS if s in present]
    domain += sorted(str(s) for s in present if s not in APPOINTMENT_STATUS_COLORS)
    colors = [APPOINTMENT_STATUS_COLORS.get(s, "#6a1b9a") for s in domain]
    return {"field": "status", "type": "nominal", "scale": {"domain": domain, "range": colors}}


def rejections_section(page: ReportPage, charts: list[dict[str, Any]]) -> str:
    reasons = page.report.get("rejections") or {}
    head = '<section id="rejections"><h2>Rejections by reason</h2>'
    if not reasons:
        return head + "<p>No row was rejected.</p></section>"
    values = [{"reason": code, "rows": int(count)} for code, count in reasons.items()]
    spec = bar(values, "reason", "rows", "rows rejected", color="#c62828")
    return (head + chart(charts, spec, "rejections by reason code")
            + '<p class="small">A row can have several reasons; it counts once under each.</p></section>')


def per_day_spec(per_day: list[dict[str, Any]]) -> dict[str, Any]:
    """Appointments per booking day, stacked by status; the day's total on each bar (few days only)."""
    layers: list[dict[str, Any]] = [{"mark": {"type": "bar"}}]
    if len({row.get("day") for row in per_day}) <= DAY_LABELS_MAX:
        layers.append({"mark": {"type": "text", "baseline": "bottom", "dy": -2, "fontSize": 10},
                       "encoding": {"color": {"value": "#333"}, "tooltip": None,
                                    "text": {"field": "appointments", "aggregate": "sum", "type": "quantitative"}}})
    return {"width": 820, "height": 220, "data": {"values": per_day}, "layer": layers, "encoding": {
        "x": {"field": "day", "type": "temporal", "timeUnit": "utcyearmonthdate", "title": "booking day",
              "axis": {"format": "%b %d", "labelAngle": -45}},
        "y": {"field": "appointments", "type": "quantitative", "aggregate": "sum", "title": "appointments",
              "axis": {"tickMinStep": 1, "format": "d"}},
        "color": status_color(per_day),
        "tooltip": [{"field": "day", "type": "nominal"}, {"field": "status", "type": "nominal"},
                    {"field": "appointments", "type": "quantitative"}]}}


def loaded_section(page: ReportPage, charts: list[dict[str, Any]]) -> str:
    aggregates = page.aggregates
    head = '<section id="loaded"><h2>Loaded appointments</h2>'
    if aggregates is None:
        return head + f"<p>No chart: {e(page.loaded_note)}.</p></section>"
    parts = [head]
    if aggregates.get("note"):
        parts.append(f'<p class="note">{e(aggregates["note"])}</p>')
    per_day = aggregates.get("per_day") or []
    if per_day:
        parts.append("<h3>Per day, by status</h3>"
                     + chart(charts, per_day_spec(per_day), "appointments per day by status"))
    per_doctor = aggregates.get("per_doctor") or []
    if per_doctor:
        shown, total = len(per_doctor), aggregates.get("doctors_total", len(per_doctor))
        title = f"Confirmed per doctor (top {shown} of {total:,} doctors)" if total > shown else "Confirmed per doctor"
        spec = bar(per_doctor, "doctor", "confirmed", "confirmed appointments", color="#2e7d32")
        parts.append(f"<h3>{e(title)}</h3>" + chart(charts, spec, "confirmed appointments per doctor"))
    per_specialty = aggregates.get("per_specialty") or []
    if per_specialty:
        spec = bar(per_specialty, "specialty", "ratio", "% of appointments confirmed", color="#1565c0",
                   domain=[0, 100], extra_tooltip=["confirmed", "appointments"], label_format=".1f")
        parts.append("<h3>Confirmation ratio per specialty</h3>"
                     + chart(charts, spec, "confirmation ratio per specialty"))
    return "".join(parts) + "</section>"


def _trend_spec(values: list[dict[str, Any]], y: str, title: str, series: str, by_file: bool) -> dict[str, Any]:
    encoding: dict[str, Any] = {
        "x": {"field": "seq", "type": "ordinal", "title": "run (oldest to newest)", "axis": {"labelAngle": 0}},
        "y": {"field": y, "type": "quantitative", "title": title},
        "color": {"field": series, "type": "nominal", "title": None},
        "tooltip": [{"field": "seq", "type": "ordinal", "title": "run #"}, {"field": "run", "type": "nominal"},
                    {"field": "started", "type": "nominal"}, {"field": "file", "type": "nominal"},
                    {"field": series, "type": "nominal"}, {"field": y, "type": "quantitative"}]}
    if by_file:  # one line per (series, input file): runs of other files are not joined to it
        encoding["strokeDash"] = {"field": "file", "type": "nominal", "title": "appointments file",
                                  "legend": {"labelLimit": 320, "symbolType": "stroke"}}
    return {"width": 820, "height": 200, "data": {"values": values}, "mark": {"type": "line", "point": True},
            "encoding": encoding}


def trends_section(page: ReportPage, charts: list[dict[str, Any]]) -> str:
    count = len(page.trends)
    head = f'<section id="trends"><h2>Trends over the last {count} run{"s" if count != 1 else ""}</h2>'
    if not page.trends:
        return head + "<p>No run history in the database.</p></section>"
    by_file = len({run.get("appointments_file") or NO_FILE for run in page.trends}) > 1
    runs = [{"seq": seq, "run": run["run_id"], "started": run.get("started_at"),
             "file": run.get("appointments_file") or NO_FILE, "source": run}
            for seq, run in enumerate(page.trends, start=1)]
    metric_values = [{**_point(run), "metric": key, "value": value}
                     for run in runs for key, value in (run["source"].get("metrics") or {}).items() if finite(value)]
    row_values = [{**_point(run), "series": series, "rows": run["source"].get(series)}
                  for run in runs for series in ("loaded", "rejected") if run["source"].get(series) is not None]
    parts = [head, '<p class="small">x axis: the runs in the order they started (1 = oldest shown)'
             + ("; a line per appointments file." if by_file else ".") + "</p>"]
    for values, y, title, series in ((metric_values, "value", "metric value (%)", "metric"),
                                     (row_values, "rows", "appointment rows", "series")):
        if values:
            parts.append(chart(charts, _trend_spec(values, y, title, series, by_file), title + " per run"))
    return "".join(parts) + "</section>"


def _point(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in ("seq", "run", "started", "file")}
