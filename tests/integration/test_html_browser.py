"""quality_report.html in a real browser: headless Chromium (Debian's `chromium`), offline.

The page counts the charts vega-embed drew (body@data-charts-rendered) and the script errors
and console.error calls (body@data-chart-errors); Chromium's --dump-dom shows both once the
page settled: the test also reads the verdict, the offending values and the paged rejected rows
there. A screenshot lands in the run's reports/ folder."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import AS_OF

from healthtech_etl import quality
from healthtech_etl.sample import write_sample_workbooks

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless browser test needs Chromium (Debian: apt-get install -y chromium)")


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any attempt to fetch something would fail
        "--enable-logging=stderr", "--v=0",
        "--virtual-time-budget=15000",  # run the page's timers/promises to completion, no wall-clock wait
        *args, page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def dom_text(value: str) -> str:
    """``value`` as Chromium's --dump-dom writes a text node (only &, < and > escaped)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\u00a0", "&nbsp;")


def section(dom: str, name: str) -> str:
    start = dom.index(f'<section id="{name}"')
    return dom[start:dom.index("</section>", start)]


def test_report_renders_every_chart_without_errors(run_cli, tmp_path):
    # The sample's mess includes appointments of unknown doctors and booking dates out of range.
    doctors, appointments = write_sample_workbooks(tmp_path / "in", rows=2000, seed=7)
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
                   "--quiet") == 0
    page = tmp_path / "reports" / "quality_report.html"
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text(encoding="utf-8"))

    dom = chromium(page, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body ([^>]*)>", dom.stdout)
    assert body, dom.stdout[:500]
    attributes = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    errors = re.search(r'<pre id="chart-errors"[^>]*>(.*?)</pre>', dom.stdout, flags=re.S)
    assert attributes["data-chart-errors"] == "0", errors and errors.group(1)
    assert int(attributes["data-charts-expected"]) == 6
    assert attributes["data-charts-rendered"] == attributes["data-charts-expected"]
    assert dom.stdout.count("<svg") >= 6  # every chart is an SVG in the document
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if re.search(r"error|uncaught", line, flags=re.I)], console

    # The verdict first, then the offending values of the reasons that occurred.
    verdict = section(dom.stdout, "verdict")
    assert dom.stdout.index('<section id="verdict"') < dom.stdout.index('<section id="run"')
    sentence = quality.verdict(report)
    assert sentence == report.get("verdict", sentence) and sentence.startswith("Loaded ")
    assert f'<p class="verdict-sentence">{dom_text(sentence)}</p>' in verdict
    assert f"Quality is <strong>{report['status'].upper()}</strong> because:" in verdict
    breached = [key for key, metric in report["metrics"].items() if metric["status"] != "ok"]
    assert breached and re.findall(r"<li>.*?<strong>(\w+)</strong>", verdict) == breached
    offending = section(dom.stdout, "offending")
    for code in ("unknown_doctor", "booking_date_out_of_range"):
        info = report["offending"]["appointments"][code]
        row = re.search(rf"<tr><td>appointments</td><td>{code}</td><td class=\"num\">([\d,]+)</td>(.*?)</tr>",
                        offending, flags=re.S)
        assert row and int(row.group(1).replace(",", "")) == info["count"] > 0, code
        for top in info["top_values"]:
            assert dom_text(repr(top["value"])) in row.group(2) and f"\u00d7{top['count']:,}" in row.group(2)
    dates = report["offending"]["appointments"]["booking_date_out_of_range"]["date_range"]
    assert f"found <span class=\"nw\">{dates['found_min']} .. {dates['found_max']}</span>" in offending
    assert f"allowed <span class=\"nw\">{dates['allowed_min']} .. {dates['allowed_max']}</span>" in offending

    # The rejected rows: collapsed, 25 a page, the others hidden by the page's script.
    rejected = section(dom.stdout, "rejected-rows")
    rows = re.findall(r"<tr( hidden=\"\")?><td>(?:doctors|appointments)</td>", rejected)
    assert len(rows) == min(200, report["counts"]["appointments"]["rejected"] + report["counts"]["doctors"]["rejected"])
    assert [bool(hidden) for hidden in rows] == [index >= 25 for index in range(len(rows))]
    assert '<p class="pager">' in rejected and "rows 1-25 of " in rejected

    shot = tmp_path / "reports" / "quality_report.png"
    screenshot = chromium(page, tmp_path / "profile-shot", "--window-size=1200,3200", f"--screenshot={shot}")
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_a_gated_run_page_draws_and_never_calls_its_rows_loaded(run_cli, tmp_path):
    doctors, appointments = write_sample_workbooks(tmp_path / "in", rows=300, seed=3)
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
                   "--fail-on", "warning", "--quiet") == 5
    page = tmp_path / "reports" / "quality_report.html"
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text(encoding="utf-8"))
    assert report["load_status"] == "gated"

    dom = chromium(page, tmp_path / "profile-gated", "--dump-dom")
    body = dict(re.findall(r'([\w-]+)="([^"]*)"', re.search(r"<body ([^>]*)>", dom.stdout).group(1)))
    assert body["data-chart-errors"] == "0" and body["data-charts-rendered"] == body["data-charts-expected"] != "0"
    verdict = section(dom.stdout, "verdict")
    assert f'<p class="verdict-sentence">{dom_text(quality.verdict(report))}</p>' in verdict
    assert "Nothing loaded: data quality" in verdict and "loaded anyway" not in verdict
    run = section(dom.stdout, "run")
    headers = re.findall(r"<th>([^<]*)</th>", run[run.index("<thead>"):])
    assert headers[4:] == ["read", "loaded", "would load", "rejected", "blank rows skipped"]
    cells = re.search(r"<tr><td>appointments</td>(?:<td[^>]*>[^<]*</td>){4}<td[^>]*>([^<]*)</td><td[^>]*>([^<]*)</td>",
                      run)
    counts = report["counts"]["appointments"]
    assert cells and (cells.group(1), cells.group(2)) == ("0", f"{counts['would_load']:,}") and counts["would_load"]
    assert "No chart: " in section(dom.stdout, "loaded")
