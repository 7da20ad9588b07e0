"""What ``quality_report.html`` shows (:class:`ReportPage`) and the small escaping / formatting
helpers its section modules share. Every value from the data goes through :func:`e`."""

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

REJECTED_ROWS_SHOWN = 200
PHI_COLUMNS = ("patient_id",)  # their values appear only in the rejected-rows table
VALUE_SHOWN = 40  # characters of a value shown in a table cell before it is cut (in full in its title)


@dataclass
class ReportPage:
    """What the page shows: the quality_report.json content, the first rejected rows, the loaded
    appointments' aggregates (None: nothing loaded, ``loaded_note`` says why) and recent runs.
    ``rejections_href``: a relative link to the rejected rows' CSV beside the page ("" = none)."""

    report: dict[str, Any]
    rejected_rows: list[dict[str, Any]] = field(default_factory=list)
    rejected_total: int = 0
    aggregates: Optional[dict[str, Any]] = None
    trends: list[dict[str, Any]] = field(default_factory=list)
    rejections_csv: str = ""
    notes: list[str] = field(default_factory=list)
    ledger: Optional[dict[str, Any]] = None
    loaded_note: str = "this run loaded nothing"
    rejections_href: str = ""


def loaded(report: dict[str, Any]) -> bool:
    """Whether the run's rows are in the tables: only then are its valid rows "loaded"."""
    return report.get("load_status") == "succeeded"


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else e(value)


def fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return "" if value is None else str(value)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def badge(status: Any, label: str = "") -> str:
    return f'<span class="badge badge-{e(status)}">{e(f"{label} {status}".strip())}</span>'


def table(headers: Sequence[str], rows: Iterable[str]) -> str:
    """A table of escaped ``headers`` and ``rows`` (each the already-escaped ``<td>`` cells of one row)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(f"<tr>{row}</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def span(first: Any, last: Any) -> str:
    """``12-840`` (spreadsheet rows, kept on one line), ``12`` when both ends agree, "" when unknown."""
    if first is None:
        return ""
    return f'<span class="nw">{e(first)}' + ("" if last in (None, first) else f"&ndash;{e(last)}") + "</span>"


def top_values(values: Any, withheld: bool = False, css: str = "tv") -> str:
    """``'105' ×175 (rows 12-840)`` per value, one a line (``css`` "tvi": side by side); patient ids withheld."""
    if withheld and values:
        return '<span class="small">values withheld (patient ids: see the rejected rows)</span>'
    parts = []
    for item in values or []:
        value = item.get("value")
        shown = "(empty)" if value in (None, "") else repr(str(value))
        title = f' title="{e(shown)}"' if len(shown) > VALUE_SHOWN else ""  # cut by the CSS, in full here
        rows = span(item.get("first_row"), item.get("last_row"))
        parts.append(f'<span class="{css}"><span class="mono cut"{title}>{e(shown)}</span> &times;{n(item.get("count"))}'
                     + (f' <span class="small">(rows {rows})</span>' if rows else "") + "</span>")
    return "".join(parts)
