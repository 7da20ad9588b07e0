"""quality_report.html in a real browser: headless Chromium (Debian's `chromium`), offline.

The page counts the charts vega-embed drew (body@data-charts-rendered) and the script errors
and console.error calls (body@data-chart-errors); Chromium's --dump-dom shows both once the
page settled. A screenshot lands in the run's reports/ folder."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import AS_OF

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


def test_report_renders_every_chart_without_errors(run_cli, tmp_path):
    doctors, appointments = write_sample_workbooks(tmp_path / "in", rows=2000, seed=7)
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
                   "--quiet") == 0
    page = tmp_path / "reports" / "quality_report.html"

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

    shot = tmp_path / "reports" / "quality_report.png"
    screenshot = chromium(page, tmp_path / "profile-shot", "--window-size=1200,3200", f"--screenshot={shot}")
    assert screenshot.returncode == 0, screenshot.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
