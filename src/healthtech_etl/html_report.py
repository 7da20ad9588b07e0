"""``quality_report.html``: one self-contained page that shows a run, opening offline (CSS, data,
Vega-Lite specs and the vendored vega bundles of ``assets/`` inlined). Every data value is escaped;
patient ids appear only in the rejected-rows table."""

import html
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from .paths import write_atomically

HTML_FILE = "quality_report.html"
ASSET_VERSIONS = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
_SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
_ASSETS = resources.files("healthtech_etl").joinpath("assets")
REJECTED_ROWS_SHOWN = 200
RAW_CELL_MAX = 120  # characters of a raw cell shown in the table
LIST_MAX = 50  # unknown status values / ignored columns listed
APPOINTMENT_STATUS_COLORS = {"confirmed": "#2e7d32", "cancelled": "#c62828", "unknown": "#9e9e9e"}
# counts.<entity> keys shown per entity beside the ignored columns, with their labels
SKIP_COUNTS = {"blank_rows_skipped": "blank rows skipped", "rows_above_header_skipped": "rows above the header skipped",
               "control_characters_removed": "control characters removed from text"}


@dataclass
class ReportPage:
    """What the page shows: the quality_report.json content, the first rejected rows, the loaded
    appointments' aggregates (None: nothing loaded, ``loaded_note`` says why) and recent runs."""

    report: dict[str, Any]
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    rejected_total: int = 0
    aggregates: Optional[dict[str, Any]] = None
    trends: list[dict[str, Any]] = field(default_factory=list)
    rejections_csv: str = ""
    notes: list[str] = field(default_factory=list)
    ledger: Optional[dict[str, Any]] = None
    loaded_note: str = "this run loaded nothing"


def render(page: ReportPage) -> str:
    """The whole HTML document as text."""
    report = page.report
    charts: list[dict[str, Any]] = []
    sections = [_run_section(page), _metrics_section(report), _rejections_section(page, charts),
                _loaded_section(page, charts), _oddities_section(report), _trends_section(page, charts),
                _rejected_rows_section(page)]
    specs = "\n".join(f'<script type="application/json" id="spec-{i}">{embed_json(spec)}</script>'
                      for i, spec in enumerate(charts))
    title = _e(f"Data quality report - run {report.get('run_id', '?')}")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network: nothing may be fetched, whatever a spec says.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{title}</title><style>{_CSS}</style><script>{_ERRORS_JS}</script></head>\n",
        f'<body data-charts-expected="{len(charts)}" data-charts-rendered="0" data-chart-errors="0">\n',
        f"<header><h1>{title}</h1>{_badge(report.get('status', '?'), 'quality')}"
        f"{_badge(report.get('load_status', '?'), 'load')}</header>\n",
        "".join(f'<p class="note">{_e(note)}</p>' for note in page.notes),
        "\n".join(sections),
        f'<footer>healthtech-etl · charts: vega {ASSET_VERSIONS["vega"]}, vega-lite '
        f'{ASSET_VERSIONS["vega-lite"]}, vega-embed {ASSET_VERSIONS["vega-embed"]} (BSD-3-Clause, inlined)</footer>\n',
        '<pre id="chart-errors" hidden></pre>\n', specs, "\n",
        "".join(f"<script>{_ASSETS.joinpath(name).read_text(encoding='utf-8')}</script>\n" for name in _SCRIPTS),
        f"<script>{_BOOT_JS}</script>\n</body></html>\n",
    ])


def write_html(path: Path, page: ReportPage) -> Path:
    """Render ``page`` into ``path`` atomically (tmp file + rename: never half-written)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    text = render(page)
    return write_atomically(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def embed_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>``, ``<!--`` or entity can form."""
    text = json.dumps(value, ensure_ascii=False, default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _run_section(page: ReportPage) -> str:
    report, ledger = page.report, page.ledger or {}
    timings = report.get("timings_seconds") or {}
    rows = [
        ("run id", report.get("run_id")), ("as of", report.get("as_of")), ("quality", report.get("status")),
        ("load status", report.get("load_status")), ("started", ledger.get("started_at")),
        ("finished", ledger.get("finished_at")), ("report generated", report.get("generated_at")),
        ("timings", ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in timings.items()) or None),
        ("settings", ", ".join(f"{k}={v}" for k, v in (report.get("settings") or {}).items()) or None),
        ("error", ledger.get("error")),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v not in (None, ""))
    counts = report.get("counts") or {}
    input_rows = "".join(
        f"<tr><td>{_e(entity)}</td><td>{_e(info.get('file'))}</td><td class=\"mono\">{_e(info.get('sha256'))}</td>"
        f"<td>{_e(info.get('reader', '-'))}</td>"
        + "".join(f'<td class="num">{_n((counts.get(entity) or {}).get(key))}</td>'
                  for key in ("read", "loaded", "rejected", "blank_rows_skipped"))
        + "</tr>"
        for entity, info in (report.get("inputs") or {}).items()
    )
    return (f'<section id="run"><h2>Run</h2><table class="kv">{body}</table>'
            '<table><thead><tr><th>entity</th><th>file</th><th>SHA-256</th><th>reader</th><th>read</th>'
            "<th>loaded</th><th>rejected</th><th>blank rows skipped</th></tr></thead>"
            f"<tbody>{input_rows}</tbody></table></section>")


def _metrics_section(report: dict[str, Any]) -> str:
    rows = []
    for key, metric in (report.get("metrics") or {}).items():
        status, value = str(metric.get("status", "?")), metric.get("value")
        sign = "<" if metric.get("alert_when") == "below" else ">"
        value = f"{value:.2f} %" if _finite(value) else _e(value)
        rows.append(f'<tr class="status-{_e(status)}"><td>{_e(key)}</td><td class="num">{value}</td>'
                    f'<td class="num">alert if {_e(sign)} {_e(_fmt(metric.get("threshold")))}</td>'
                    f"<td>{_badge(status)}</td><td>{_e(metric.get('description', ''))}</td></tr>")
    return ('<section id="metrics"><h2>Quality metrics</h2><table><thead><tr><th>metric</th><th>value</th>'
            "<th>threshold</th><th>status</th><th>definition</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def _rejections_section(page: ReportPage, charts: list[dict[str, Any]]) -> str:
    reasons = page.report.get("rejections") or {}
    head = '<section id="rejections"><h2>Rejections by reason</h2>'
    if not reasons:
        return head + "<p>No row was rejected.</p></section>"
    values = [{"reason": code, "rows": int(count)} for code, count in reasons.items()]
    spec = _bar(values, "reason", "rows", "rows rejected", color="#c62828")
    return (head + _chart(charts, spec, "rejections by reason code")
            + "<p class=\"small\">A row can have several reasons; it counts once under each.</p></section>")


def _loaded_section(page: ReportPage, charts: list[dict[str, Any]]) -> str:
    aggregates = page.aggregates
    head = '<section id="loaded"><h2>Loaded appointments</h2>'
    if aggregates is None:
        return head + f"<p>No chart: {_e(page.loaded_note)}.</p></section>"
    parts = [head]
    if aggregates.get("note"):
        parts.append(f'<p class="note">{_e(aggregates["note"])}</p>')
    per_day = aggregates.get("per_day") or []
    if per_day:
        spec = {"width": 820, "height": 220, "data": {"values": per_day}, "mark": {"type": "bar"}, "encoding": {
            "x": {"field": "day", "type": "temporal", "timeUnit": "utcyearmonthdate", "title": "booking day",
                  "axis": {"format": "%b %d", "labelAngle": -45}},
            "y": {"field": "appointments", "type": "quantitative", "aggregate": "sum", "title": "appointments",
                  "axis": {"tickMinStep": 1, "format": "d"}},
            "color": _status_color(per_day),
            "tooltip": [{"field": "day", "type": "nominal"}, {"field": "status", "type": "nominal"},
                        {"field": "appointments", "type": "quantitative"}]}}
        parts.append("<h3>Per day, by status</h3>" + _chart(charts, spec, "appointments per day by status"))
    per_doctor = aggregates.get("per_doctor") or []
    if per_doctor:
        shown, total = len(per_doctor), aggregates.get("doctors_total", len(per_doctor))
        title = f"Confirmed per doctor (top {shown} of {total:,} doctors)" if total > shown else "Confirmed per doctor"
        spec = _bar(per_doctor, "doctor", "confirmed", "confirmed appointments", color="#2e7d32")
        parts.append(f"<h3>{_e(title)}</h3>" + _chart(charts, spec, "confirmed appointments per doctor"))
    per_specialty = aggregates.get("per_specialty") or []
    if per_specialty:
        spec = _bar(per_specialty, "specialty", "ratio", "% of appointments confirmed", color="#1565c0",
                    domain=[0, 100], extra_tooltip=["confirmed", "appointments"])
        parts.append("<h3>Confirmation ratio per specialty</h3>"
                     + _chart(charts, spec, "confirmation ratio per specialty"))
    return "".join(parts) + "</section>"


def _oddities_section(report: dict[str, Any]) -> str:
    items = list((report.get("unknown_status_values") or {}).items())
    unknown_html = (
        "<table><thead><tr><th>status value (loaded as unknown)</th><th>rows</th></tr></thead><tbody>"
        + "".join(f"<tr><td class=\"mono\">{_e(repr(value))}</td><td class=\"num\">{_n(count)}</td></tr>"
                  for value, count in items[:LIST_MAX])
        + "</tbody></table>"
        + (f"<p class=\"small\">... and {len(items) - LIST_MAX:,} more values.</p>" if len(items) > LIST_MAX else "")
        if items else "<p>Every status value was recognised.</p>"
    )
    counts = report.get("counts") or {}
    rows, missing = [], False
    for entity, info in (report.get("inputs") or {}).items():
        ignored = list(info.get("ignored_columns") or [])
        shown = ", ".join(repr(str(c)) for c in ignored[:LIST_MAX]) + (" ..." if len(ignored) > LIST_MAX else "")
        shown_counts = [(counts.get(entity) or {}).get(key) for key in SKIP_COUNTS]
        missing = missing or None in shown_counts
        rows.append(f"<tr><td>{_e(entity)}</td><td class=\"mono\">{_e(shown or '-')}</td>"
                    + "".join(f'<td class="num">{_n("-" if value is None else value)}</td>' for value in shown_counts)
                    + "</tr>")
    return (
        '<section id="oddities"><h2>Unknown statuses, ignored columns, skipped rows</h2>'
        f"{unknown_html}<table><thead><tr><th>entity</th><th>ignored columns</th>"
        + "".join(f"<th>{_e(label)}</th>" for label in SKIP_COUNTS.values())
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        # A report stored before a count existed has no value for it: a dash, not a guess.
        + ('<p class="small">-: not counted (this run\'s stored report predates the count).</p>' if missing else "")
        + "</section>"
    )


def _trends_section(page: ReportPage, charts: list[dict[str, Any]]) -> str:
    count = len(page.trends)
    head = f'<section id="trends"><h2>Trends over the last {count} run{"s" if count != 1 else ""}</h2>'
    if not page.trends:
        return head + "<p>No run history in the database.</p></section>"
    metric_values = [{"started": run["started_at"], "run": run["run_id"], "metric": key, "value": value}
                     for run in page.trends for key, value in (run.get("metrics") or {}).items() if _finite(value)]
    row_values = [{"started": run["started_at"], "run": run["run_id"], "series": series, "rows": run.get(series)}
                  for run in page.trends for series in ("loaded", "rejected") if run.get(series) is not None]
    parts = [head]
    for values, y, title, color in ((metric_values, "value", "metric value (%)", "metric"),
                                    (row_values, "rows", "appointment rows", "series")):
        if not values:
            continue
        spec = {"width": 820, "height": 200, "data": {"values": values}, "mark": {"type": "line", "point": True},
                "encoding": {"x": {"field": "started", "type": "temporal", "title": "run started (UTC)",
                                   "scale": {"type": "utc"}, "axis": {"format": "%b %d %H:%M", "labelAngle": -30}},
                             "y": {"field": y, "type": "quantitative", "title": title},
                             "color": {"field": color, "type": "nominal", "title": None},
                             "tooltip": [{"field": "run", "type": "nominal"}, {"field": color, "type": "nominal"},
                                         {"field": y, "type": "quantitative"}]}}
        parts.append(_chart(charts, spec, title + " per run"))
    return "".join(parts) + "</section>"


def _rejected_rows_section(page: ReportPage) -> str:
    rows = page.rejected_rows[:REJECTED_ROWS_SHOWN]
    where = f" The full list is in {page.rejections_csv}." if page.rejections_csv else ""
    shown = f"The first {len(rows):,} of {page.rejected_total:,} rejected rows." if rows else "No rejected rows."
    body = "".join(
        f"<tr><td>{_e(row.get('entity'))}</td><td class=\"num\">{_n(row.get('row_number'))}</td>"
        f"<td class=\"num\">{_e(_fmt(row.get('record_id')))}</td><td>{_e(', '.join(row.get('reasons') or []))}</td>"
        f"<td class=\"mono\">{_raw_cells(row.get('raw'))}</td></tr>"
        for row in rows
    )
    table = ("<table><thead><tr><th>entity</th><th>row</th><th>record id</th><th>reasons</th><th>raw cells</th>"
             f"</tr></thead><tbody>{body}</tbody></table>") if rows else ""
    return ('<section id="rejected-rows"><h2>Rejected rows</h2>'
            '<p class="phi"><strong>Protected health information:</strong> this table holds patient ids and the '
            "raw cells of rejected rows. It is the only place in this report that does; share the report "
            f"accordingly.</p><p>{_e(shown + where)}</p>{table}</section>")


def _chart(charts: list[dict[str, Any]], spec: dict[str, Any], label: str) -> str:
    index = len(charts)
    charts.append(spec)
    return f'<figure class="chart" data-chart="{index}" aria-label="{_e(label)}"></figure>'


def _bar(values: list[dict[str, Any]], category: str, amount: str, title: str, color: str,
         domain: Optional[list[float]] = None, extra_tooltip: Optional[list[str]] = None) -> dict[str, Any]:
    x: dict[str, Any] = {"field": amount, "type": "quantitative", "title": title}
    if domain:
        x["scale"] = {"domain": domain}
    else:  # counts: whole-number ticks only
        x["axis"] = {"tickMinStep": 1, "format": "d"}
    tooltip = [{"field": category, "type": "nominal"}, {"field": amount, "type": "quantitative"}]
    tooltip += [{"field": name, "type": "quantitative"} for name in extra_tooltip or []]
    return {
        "width": 560, "height": {"step": 18}, "data": {"values": values}, "mark": {"type": "bar", "color": color},
        "encoding": {"y": {"field": category, "type": "nominal", "sort": "-x", "title": None,
                           "axis": {"labelLimit": 260}}, "x": x, "tooltip": tooltip},
    }


def _status_color(values: list[dict[str, Any]]) -> dict[str, Any]:
    present = {v.get("status") for v in values}
    domain = [s for s in APPOINTMENT_STATUS_COLORS if s in present]
    domain += sorted(str(s) for s in present if s not in APPOINTMENT_STATUS_COLORS)
    colors = [APPOINTMENT_STATUS_COLORS.get(s, "#6a1b9a") for s in domain]
    return {"field": "status", "type": "nominal", "scale": {"domain": domain, "range": colors}}


def _raw_cells(raw: Any) -> str:
    if not isinstance(raw, dict):
        return _e(raw)
    parts = []
    for key, value in raw.items():
        text = "" if value is None else str(value)
        if len(text) > RAW_CELL_MAX:
            text = text[:RAW_CELL_MAX] + "..."
        parts.append(f"<span class=\"k\">{_e(key)}</span>={_e(repr(text))}")
    return " ".join(parts)


def _badge(status: Any, label: str = "") -> str:
    return f'<span class="badge badge-{_e(status)}">{_e(f"{label} {status}".strip())}</span>'


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _e(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return "" if value is None else str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_CSS = """
:root{--ok:#2e7d32;--warning:#ef6c00;--critical:#c62828;--muted:#666}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;
 max-width:1100px;margin:0 auto;padding:16px 24px;background:#fff}
header{display:flex;align-items:center;gap:10px;flex-wrap:wrap;border-bottom:2px solid #ddd;padding-bottom:8px}
h1{font-size:20px;margin:0 12px 0 0}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #eee}
h3{font-size:14px;margin:14px 0 4px;color:#444}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
thead th{background:#f4f4f4}table.kv th{background:#fafafa;font-weight:600;width:140px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.badge{display:inline-block;border-radius:10px;padding:1px 10px;color:#fff;background:#777;font-weight:600;
 font-size:12px;text-transform:uppercase}
.badge-ok,.badge-succeeded{background:var(--ok)}.badge-warning{background:var(--warning)}
.badge-critical,.badge-failed{background:var(--critical)}.badge-not_loaded{background:#546e7a}
tr.status-warning td:first-child{border-left:5px solid var(--warning)}
tr.status-critical td:first-child{border-left:5px solid var(--critical)}
tr.status-ok td:first-child{border-left:5px solid var(--ok)}
.note{background:#fff8e1;border-left:4px solid #ffb300;padding:4px 10px;margin:8px 0}
.phi{background:#fdecea;border-left:4px solid var(--critical);padding:6px 10px}
.small{color:var(--muted);font-size:12px}.k{color:var(--muted)}
figure.chart{margin:6px 0 12px;min-height:40px}
footer{margin-top:30px;color:var(--muted);font-size:12px;border-top:1px solid #eee;padding-top:6px}
@media print{body{max-width:none;padding:0;font-size:11px}section{break-inside:avoid-page}
 #rejected-rows{break-inside:auto}tr{break-inside:avoid}.badge,.note,.phi,tr td:first-child,thead th
 {-webkit-print-color-adjust:exact;print-color-adjust:exact}a{color:inherit;text-decoration:none}}
"""

# _ERRORS_JS (in <head>) collects script errors and console.error calls; _BOOT_JS draws every spec.
# body@data-charts-rendered / data-chart-errors count both (messages in #chart-errors): the browser test reads them.
_ERRORS_JS = """
window.__reportErrors=[];
window.addEventListener('error',function(e){window.__reportErrors.push('error: '+e.message);});
(function(){var original=console.error;console.error=function(){
  window.__reportErrors.push('console.error: '+Array.prototype.join.call(arguments,' '));
  return original.apply(console,arguments);};})();
"""
_BOOT_JS = """
(function(){
  var body=document.body, done=0, failed=0, errors=document.getElementById('chart-errors');
  function fail(msg){failed++;body.setAttribute('data-chart-errors',String(failed));
    errors.hidden=false;errors.textContent+=msg+'\\n';}
  window.__reportErrors.forEach(fail);
  window.__reportErrors={push:fail};
  var figures=document.querySelectorAll('figure[data-chart]');
  if(typeof vegaEmbed!=='function'){fail('vega-embed did not load');return;}
  figures.forEach(function(figure){
    var index=figure.getAttribute('data-chart');
    var spec=JSON.parse(document.getElementById('spec-'+index).textContent);
    vegaEmbed(figure,spec,{actions:false,renderer:'svg'}).then(function(){
      if(figure.querySelector('svg')){done++;body.setAttribute('data-charts-rendered',String(done));}
      else{fail('chart '+index+' drew nothing');}
    }).catch(function(err){fail('chart '+index+': '+err);});
  });
})();
"""
