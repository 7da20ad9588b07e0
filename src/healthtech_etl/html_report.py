"""``quality_report.html``: one self-contained page that shows a run, opening offline (CSS, data,
Vega-Lite specs and the vendored vega bundles of ``assets/`` inlined). Every data value is escaped;
patient ids appear only in the rejected-rows table. The sections are in :mod:`html_sections` (tables)
and :mod:`html_charts` (charts); this module assembles the page."""

import json
from importlib import resources
from pathlib import Path
from typing import Any

from . import html_charts as charts_
from . import html_sections as sections_
from .html_base import REJECTED_ROWS_SHOWN, ReportPage, badge, e, loaded, n
from .paths import write_atomically

__all__ = ["HTML_FILE", "REJECTED_ROWS_SHOWN", "ReportPage", "embed_json", "render", "write_html"]

HTML_FILE = "quality_report.html"
ASSET_VERSIONS = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
_SCRIPTS = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
_ASSETS = resources.files("healthtech_etl").joinpath("assets")


def render(page: ReportPage) -> str:
    """The whole HTML document as text."""
    report = page.report
    charts: list[dict[str, Any]] = []
    sections = [sections_.verdict_section(report), _run_section(page), sections_.metrics_section(report),
                sections_.checks_section(report), sections_.offending_section(report),
                charts_.rejections_section(page, charts), charts_.loaded_section(page, charts),
                sections_.profile_section(report), sections_.oddities_section(report),
                charts_.trends_section(page, charts), sections_.rejected_rows_section(page)]
    specs = "\n".join(f'<script type="application/json" id="spec-{i}">{embed_json(spec)}</script>'
                      for i, spec in enumerate(charts))
    title = e(f"Data quality report - run {report.get('run_id', '?')}")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No network: nothing may be fetched, whatever a spec says.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{title}</title><style>{_CSS}</style><script>{_ERRORS_JS}</script></head>\n",
        f'<body data-charts-expected="{len(charts)}" data-charts-rendered="0" data-chart-errors="0">\n',
        f"<header><h1>{title}</h1>{badge(report.get('status', '?'), 'quality')}"
        f"{badge(report.get('load_status', '?'), 'load')}</header>\n",
        "".join(f'<p class="note">{e(note)}</p>' for note in page.notes),
        "\n".join(section for section in sections if section),
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
    contract = report.get("contract") or {}
    digest = contract.get("sha256")
    rows = [
        ("run id", report.get("run_id")), ("as of", report.get("as_of")), ("quality", report.get("status")),
        ("load status", report.get("load_status")), ("started", ledger.get("started_at")),
        ("finished", ledger.get("finished_at")), ("report generated", report.get("generated_at")),
        ("timings", ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in timings.items()) or None),
        ("settings", ", ".join(f"{k}={v}" for k, v in (report.get("settings") or {}).items()) or None),
        ("contract", (contract.get("source") or "") + (f" (SHA-256 {digest})" if digest else "")),
        ("error", ledger.get("error")),
    ]
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows if v not in (None, ""))
    # Rows that passed the checks are "loaded" only once the load committed; else they "would load".
    columns = ("read", "loaded", "rejected", "blank_rows_skipped") if loaded(report) else (
        "read", "loaded", "would_load", "rejected", "blank_rows_skipped")
    input_rows = "".join(
        f"<tr><td>{e(entity)}</td><td>{e(info.get('file'))}</td><td class=\"hash\">{e(info.get('sha256'))}</td>"
        f"<td class=\"nw\">{e(info.get('reader', '-'))}</td>"
        + "".join(f'<td class="num">{n(value)}</td>' for value in _input_counts(report, entity, columns))
        + "</tr>"
        for entity, info in (report.get("inputs") or {}).items()
    )
    return (f'<section id="run"><h2>Run</h2><table class="kv">{body}</table><table><thead><tr><th>entity</th>'
            "<th>file</th><th>SHA-256</th><th>reader</th>"
            + "".join(f"<th>{e(column.replace('_', ' '))}</th>" for column in columns)
            + f"</tr></thead><tbody>{input_rows}</tbody></table></section>")


def _input_counts(report: dict[str, Any], entity: str, columns: tuple[str, ...]) -> list[Any]:
    counts = dict((report.get("counts") or {}).get(entity) or {})
    if not loaded(report) and "would_load" not in counts and "loaded" in counts:  # stored before "would_load"
        counts.update(loaded=0, would_load=counts["loaded"])
    return [counts.get(column) for column in columns]


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
.mono,.hash{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;overflow-wrap:break-word}
.hash{overflow-wrap:anywhere;min-width:16ch}
.cut{display:inline-block;max-width:42ch;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;vertical-align:top}
.tv{display:block}.tvi{display:inline-block;margin-right:1.2em}.nw{white-space:nowrap}
.verdict{border-left:6px solid #546e7a;background:#f7f9fa;padding:4px 14px;margin:12px 0}
.verdict-ok{border-color:var(--ok)}.verdict-warning{border-color:var(--warning)}
.verdict-critical{border-color:var(--critical)}.verdict p{margin:6px 0}.verdict ul{margin:4px 0;padding-left:20px}
.verdict-sentence{font-size:16px;font-weight:600}
details>summary{cursor:pointer;color:#1565c0;margin:4px 0}.pager button{margin:0 6px}
.badge{display:inline-block;border-radius:10px;padding:1px 10px;color:#fff;background:#777;font-weight:600;
 font-size:12px;text-transform:uppercase}
.badge-ok,.badge-succeeded{background:var(--ok)}.badge-warning{background:var(--warning)}
.badge-critical,.badge-failed{background:var(--critical)}.badge-not_loaded,.badge-gated{background:#546e7a}
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
  document.querySelectorAll('[data-pager]').forEach(function(box){  // the rejected rows, a page at a time
    var size=Number(box.getAttribute('data-pager')), rows=box.querySelectorAll('tbody tr'), page=0;
    var pages=Math.ceil(rows.length/size), bar=box.querySelector('.pager'), buttons=bar.querySelectorAll('button');
    function show(){
      rows.forEach(function(row,i){row.hidden=Math.floor(i/size)!==page;});
      bar.querySelector('.pager-info').textContent='rows '+(page*size+1)+'-'+Math.min(rows.length,(page+1)*size)+
        ' of '+rows.length;
      buttons[0].disabled=page===0;buttons[1].disabled=page>=pages-1;
    }
    buttons.forEach(function(button){button.addEventListener('click',function(){
      page=Math.min(pages-1,Math.max(0,page+Number(button.getAttribute('data-step'))));show();});});
    bar.hidden=pages<2;show();
  });
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
