"""The tables of ``quality_report.html``: the verdict and why, the metrics with both thresholds,
the contract's column checks, the offending values, the column profile, the oddities and the
rejected rows (collapsed, paged in the browser). A key absent from an older report renders nothing."""

from typing import Any

from . import html_base, quality
from .html_base import ReportPage, badge, e, finite, fmt, n, span, table, top_values

RAW_CELL_MAX = 120  # characters of a raw cell kept in the table
PAGE_ROWS = 25  # rejected rows per page
LIST_MAX = 50  # unknown status values / ignored columns listed
# counts.<entity> keys shown per entity beside the ignored columns, with their labels
SKIP_COUNTS = {"blank_rows_skipped": "blank rows skipped", "rows_above_header_skipped": "rows above the header skipped",
               "control_characters_removed": "control characters removed from text"}


def thresholds(metric: dict[str, Any]) -> str:
    """``warning if < 90, critical if < 50`` (a report stored before both levels: ``alert if < 90``)."""
    sign = "<" if metric.get("alert_when") == "below" else ">"
    if "critical_threshold" not in metric:
        return f"alert if {sign} {fmt(metric.get('threshold'))}"
    levels = []
    for name, value in (("warning", metric.get("threshold")), ("critical", metric.get("critical_threshold"))):
        levels.append(f"{name} if {sign} {fmt(value)}" if value is not None else f"no {name} level")
    return ", ".join(levels)


def _percent(value: Any) -> str:
    return f"{value:.2f} %" if finite(value) else e(value)


def _load_sentence(report: dict[str, Any]) -> str:
    """Why a run with alerts was loaded all the same (the verdict says why a run loaded nothing)."""
    status = report.get("status")
    if report.get("load_status") != "succeeded" or status in (None, quality.OK):
        return ""
    fail_on = (report.get("settings") or {}).get("fail_on")
    gate = f"the quality gate is --fail-on {fail_on}" if fail_on else "no quality gate was set"
    return f"The data was loaded anyway: {gate}, which does not stop a {status} run."


def verdict_section(report: dict[str, Any]) -> str:
    """One sentence, then why the quality status is what it is: each breached metric and check."""
    status = str(report.get("status", "?"))
    causes = [f"<li>{badge(m.get('status'))} <strong>{e(key)}</strong> {_percent(m.get('value'))} "
              f"({e(thresholds(m))})</li>"
              for key, m in (report.get("metrics") or {}).items() if m.get("status") not in (None, quality.OK)]
    causes += [f"<li>{badge(c.get('status'))} <strong>{e(c.get('entity'))}.{e(c.get('column'))}</strong> "
               f"{e(c.get('check'))}: found {e(c.get('value'))}, expected {e(c.get('expected'))}"
               + (f" - {e(c.get('detail'))}" if c.get("detail") else "") + "</li>"
               for c in report.get("checks") or [] if c.get("status") not in (None, quality.OK)]
    why = (f"<p>Quality is <strong>{e(status.upper())}</strong> because:</p><ul>{''.join(causes)}</ul>" if causes
           else f"<p>Quality is <strong>{e(status.upper())}</strong>: every metric and check is within its "
                "thresholds.</p>")
    load = _load_sentence(report)
    return (f'<section id="verdict" class="verdict verdict-{e(status)}">'
            f'<p class="verdict-sentence">{e(quality.verdict(report))}</p>'
            + (f"<p>{e(load)}</p>" if load else "") + f"{why}</section>")


def metrics_section(report: dict[str, Any]) -> str:
    rows = []
    for key, metric in (report.get("metrics") or {}).items():
        status = str(metric.get("status", "?"))
        rows.append(f'<tr class="status-{e(status)}"><td>{e(key)}</td><td class="num">{_percent(metric.get("value"))}'
                    f'</td><td>{e(thresholds(metric))}</td><td>{badge(status)}</td>'
                    f"<td>{e(metric.get('description', ''))}</td></tr>")
    return ('<section id="metrics"><h2>Quality metrics</h2><table><thead><tr><th>metric</th><th>value</th>'
            "<th>thresholds</th><th>status</th><th>definition</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def checks_section(report: dict[str, Any]) -> str:
    checks = report.get("checks")
    if checks is None:
        return ""
    head = '<section id="checks"><h2>Column checks of the contract</h2>'
    if not checks:
        return head + "<p>The contract declares no column checks.</p></section>"
    rows = (f"<td>{e(c.get('entity'))}</td><td>{e(c.get('column'))}</td><td>{e(c.get('check'))}</td>"
            f"<td>{e(c.get('expected'))}</td><td>{e(c.get('value'))}</td><td>{badge(c.get('status', '?'))}</td>"
            f"<td>{e(c.get('detail'))}</td>" for c in checks)
    return head + table(("entity", "column", "check", "expected", "found", "status", "detail"), rows) + "</section>"


def offending_section(report: dict[str, Any]) -> str:
    offending = report.get("offending")
    if offending is None:
        return ""
    head = '<section id="offending"><h2>Offending values</h2>'
    reasons = [(entity, code, info) for entity, codes in offending.items()  # per entity, most rows first
               for code, info in sorted((codes or {}).items(), key=lambda item: -(item[1].get("count") or 0))]
    if not reasons:
        return head + "<p>No row was rejected.</p></section>"
    detailed = any(info.get("date_range") or info.get("known_doctor_ids") for _, _, info in reasons)
    rows = []
    for entity, code, info in reasons:
        column = info.get("column")
        cells = (f"<td>{e(entity)}</td><td>{e(code)}</td><td class=\"num\">{n(info.get('count'))}</td>"
                 f"<td>{e(column or '-')}</td><td class=\"num\">{span(info.get('first_row'), info.get('last_row'))}</td>"
                 f"<td>{top_values(info.get('top_values'), withheld=column in html_base.PHI_COLUMNS)}</td>")
        if detailed:
            cells += f"<td>{_date_range(info.get('date_range'))}{_known_doctors(info.get('known_doctor_ids'))}</td>"
        rows.append(cells)
    headers = ["entity", "reason", "rows", "column", "spreadsheet rows", "top values (count, spreadsheet rows)"]
    return (head + '<p class="small">Per reason code: the column at fault and its most frequent values.</p>'
            + table(headers + (["detail"] if detailed else []), rows) + "</section>")


def _date_range(dates: Any) -> str:
    if not isinstance(dates, dict):
        return ""
    lines = [f'{label} <span class="nw">{e(dates.get(f"{key}_min"))} .. {e(dates.get(f"{key}_max"))}</span>'
             for label, key in (("booking dates found", "found"), ("allowed", "allowed"))]
    lines += [f"fill series: {e(dates['pattern'])}"] if dates.get("pattern") else []
    return "".join(f'<span class="tv">{line}</span>' for line in lines)


def _known_doctors(known: Any) -> str:
    if not isinstance(known, dict):
        return ""
    where = "the doctors file and the database" if known.get("basis") == "doctors_in_file_and_database" \
        else "the doctors file"
    count = known.get("count") or 0
    ids = f" ({count:,} ids, {known.get('min')}..{known.get('max')})" if count else " (no valid doctor id)"
    return f'<span class="tv">{e(f"not in {where}{ids}")}</span>'


def profile_section(report: dict[str, Any]) -> str:
    profile = report.get("profile")
    if not profile:
        return ""
    parts = ['<section id="profile"><h2>Column profile</h2><p class="small">Per column of each input '
             "(patient ids: counts only).</p>"]
    for entity, columns in profile.items():
        rows = []
        for column, info in (columns or {}).items():
            phi = column in html_base.PHI_COLUMNS
            low, high = ("-", "-") if phi else (info.get("min"), info.get("max"))
            rows.append(f"<td>{e(column)}</td>" + "".join(f'<td class="num">{n(info.get(key))}</td>'
                                                          for key in ("rows", "nulls", "distinct"))
                        + f'<td class="mono">{e(low)}</td><td class="mono">{e(high)}</td>'
                        + f"<td>{top_values(info.get('top_values'), withheld=phi, css='tvi')}</td>")
        parts.append(f"<h3>{e(entity)}</h3>"
                     + table(("column", "rows", "empty", "distinct", "min", "max", "top values"), rows))
    return "".join(parts) + "</section>"


def oddities_section(report: dict[str, Any]) -> str:
    items = list((report.get("unknown_status_values") or {}).items())
    unknown_html = (
        "<table><thead><tr><th>status value (loaded as unknown)</th><th>rows</th></tr></thead><tbody>"
        + "".join(f"<tr><td class=\"mono\">{e(repr(value))}</td><td class=\"num\">{n(count)}</td></tr>"
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
        rows.append(f"<tr><td>{e(entity)}</td><td class=\"mono\">{e(shown or '-')}</td>"
                    + "".join(f'<td class="num">{n("-" if value is None else value)}</td>' for value in shown_counts)
                    + "</tr>")
    return (
        '<section id="oddities"><h2>Unknown statuses, ignored columns, skipped rows</h2>'
        f"{unknown_html}<table><thead><tr><th>entity</th><th>ignored columns</th>"
        + "".join(f"<th>{e(label)}</th>" for label in SKIP_COUNTS.values())
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        # A report stored before a count existed has no value for it: a dash, not a guess.
        + ('<p class="small">-: not counted (this run\'s stored report predates the count).</p>' if missing else "")
        + "</section>"
    )


def rejected_rows_section(page: ReportPage) -> str:
    rows = page.rejected_rows[:html_base.REJECTED_ROWS_SHOWN]
    where = f" The full list is in {page.rejections_csv}." if page.rejections_csv else ""
    shown = f"The first {len(rows):,} of {page.rejected_total:,} rejected rows." if rows else "No rejected rows."
    # "./": whatever the name, the link stays a file beside the page.
    link = f' <a href="./{e(page.rejections_href)}">Open {e(page.rejections_href)}</a>' if page.rejections_href else ""
    body = (f"<td>{e(row.get('entity'))}</td><td class=\"num\">{e(row.get('row_number'))}</td>"
            f"<td class=\"num\">{e(fmt(row.get('record_id')))}</td><td>{e(', '.join(row.get('reasons') or []))}</td>"
            f"<td class=\"mono\">{raw_cells(row.get('raw'))}</td>" for row in rows)
    listing = ""
    if rows:
        listing = (f'<details><summary>Show the rows ({PAGE_ROWS} per page)</summary><div data-pager="{PAGE_ROWS}">'
                   '<p class="pager" hidden><button type="button" data-step="-1">&larr; previous</button> '
                   '<span class="pager-info"></span> <button type="button" data-step="1">next &rarr;</button></p>'
                   + table(("entity", "row", "record id", "reasons", "raw cells"), body) + "</div></details>")
    return ('<section id="rejected-rows"><h2>Rejected rows</h2>'
            '<p class="phi"><strong>Protected health information:</strong> this table holds patient ids and the '
            "raw cells of rejected rows. It is the only place in this report that does; share the report "
            f"accordingly.</p><p>{e(shown + where)}{link}</p>{listing}</section>")


def raw_cells(raw: Any) -> str:
    """``column='value'`` pairs, each kept whole (never wrapped inside); a long one is cut, in full in its title."""
    if not isinstance(raw, dict):
        return e(raw)
    parts = []
    for key, value in raw.items():
        text = "" if value is None else str(value)
        if len(text) > RAW_CELL_MAX:
            text = text[:RAW_CELL_MAX] + "..."
        pair = f"{key}={text!r}"
        title = f' title="{e(pair)}"' if len(pair) > html_base.VALUE_SHOWN else ""
        parts.append(f'<span class="cut"{title}><span class="k">{e(key)}</span>={e(repr(text))}</span>')
    return " ".join(parts)
