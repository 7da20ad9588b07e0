"""quality_report.html rendering: self-contained, escaped, generic over metrics, bounded in size."""

import hashlib
import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import skipped_rows_table

from healthtech_etl import html_report
from healthtech_etl.html_report import ReportPage, embed_json, render, write_html
from healthtech_etl.run_report import first_rejected_rows

ASSETS = Path(html_report.__file__).parent / "assets"
EVIL = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"


def sample_report(**overrides):
    report = {
        "run_id": "abc123",
        "as_of": "2025-11-01",
        "generated_at": "2025-11-01T10:00:00+00:00",
        "status": "critical",
        "load_status": "succeeded",
        "metrics": {
            "id_completeness": {"value": 87.5, "threshold": 100.0, "alert_when": "below", "status": "critical",
                                "description": "ids present"},
            "duplicate_rate": {"value": 1.25, "threshold": 5.0, "alert_when": "above", "status": "ok",
                               "description": "dups"},
            # a metric this module has never heard of is rendered like the others
            "acceptance_rate": {"value": 80.0, "threshold": 90.0, "alert_when": "below", "status": "warning",
                                "description": "rows loaded"},
        },
        "counts": {"doctors": {"read": 5, "loaded": 3, "rejected": 2, "blank_rows_skipped": 1,
                               "rows_above_header_skipped": 3, "control_characters_removed": 1234},
                   "appointments": {"read": 16, "loaded": 7, "rejected": 9, "blank_rows_skipped": 2,
                                    "rows_above_header_skipped": 0, "control_characters_removed": 5}},
        "rejections": {"unknown_doctor": 3, "duplicate_row": 1},
        "unknown_status_values": {"pending": 2, EVIL: 1},
        "inputs": {"doctors": {"file": "doctors.xlsx", "sha256": "d" * 64, "reader": "openpyxl",
                               "ignored_columns": ["notes", EVIL]},
                   "appointments": {"file": "appointments.xlsx", "sha256": "a" * 64, "reader": "openpyxl",
                                    "ignored_columns": []}},
        "timings_seconds": {"read": 0.5, "clean": 0.25, "load": 1.0},
    }
    report.update(overrides)
    return report


def sample_page(**overrides):
    page = ReportPage(
        report=sample_report(),
        rejected_rows=[{"entity": "appointments", "row_number": 9, "record_id": 108, "reasons": ["unknown_doctor"],
                        "raw": {"booking_id": "108", "patient_id": "34", "status": EVIL}}],
        rejected_total=11,
        aggregates={
            "per_day": [{"day": "2025-10-21", "status": "confirmed", "appointments": 3},
                        {"day": "2025-10-21", "status": "cancelled", "appointments": 2}],
            "per_doctor": [{"doctor": f"Dr. {EVIL} (1)", "confirmed": 3}],
            "per_specialty": [{"specialty": "Cardiology", "ratio": 60.0, "confirmed": 3, "appointments": 5}],
            "doctors_total": 1,
        },
        trends=[{"run_id": "abc123", "started_at": "2025-11-01T10:00:00+00:00", "status": "succeeded",
                 "metrics": {"id_completeness": 87.5}, "loaded": 7, "rejected": 9}],
        rejections_csv="reports/rejected_rows.csv",
    )
    for key, value in overrides.items():
        setattr(page, key, value)
    return page


def specs_of(text: str) -> list:
    return [json.loads(body) for body in re.findall(r'<script type="application/json" id="spec-\d+">(.*?)</script>',
                                                    text, flags=re.S)]


def test_page_is_self_contained_and_fetches_nothing():
    text = render(sample_page())

    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "default-src 'none'" in text  # the browser would refuse any fetch anyway
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        assert (ASSETS / name).read_text(encoding="utf-8")[:2000] in text
    assert "@media print" in text


def test_every_value_from_the_data_is_escaped():
    text = render(sample_page())

    # The only <script> elements are ours: the head collector, the specs, 3 libraries and the boot script.
    assert text.count("<script") == 1 + len(specs_of(text)) + 3 + 1
    assert "<img src=x" not in text and "alert(1)</script>" not in text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in text  # raw cell, unknown status, ignored column
    # The specs survive the escaping intact (the name reaches the chart as text, via JSON).
    doctor_spec = next(s for s in specs_of(text) if s["encoding"]["y"]["field"] == "doctor")
    assert doctor_spec["data"]["values"][0]["doctor"] == f"Dr. {EVIL} (1)"


def test_embed_json_cannot_close_a_script():
    value = {"a": "</script><!-- & -->", "b": "\u2028"}
    text = embed_json(value)

    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_every_metric_is_shown_with_its_status_generically():
    text = render(sample_page())

    for key, status in (("id_completeness", "critical"), ("duplicate_rate", "ok"), ("acceptance_rate", "warning")):
        row = re.search(rf'<tr class="status-(\w+)"><td>{key}</td>.*?</tr>', text)
        assert row and row.group(1) == status, key
    assert "alert if &lt; 90" in text and "80.00 %" in text


def test_charts_match_the_data_sections():
    page = sample_page()
    text = render(page)
    specs = specs_of(text)

    assert f'data-charts-expected="{len(specs)}"' in text and len(specs) == 6
    assert text.count("<figure class=\"chart\"") == len(specs)
    reasons = next(s for s in specs if s["encoding"]["y"]["field"] == "reason")
    assert reasons["data"]["values"] == [{"reason": "unknown_doctor", "rows": 3}, {"reason": "duplicate_row", "rows": 1}]
    per_day = next(s for s in specs if s["encoding"].get("color", {}).get("field") == "status")
    assert per_day["encoding"]["color"]["scale"]["domain"] == ["confirmed", "cancelled"]


def test_missing_sections_say_why_instead_of_drawing():
    page = sample_page(aggregates=None, trends=[], rejected_rows=[], rejected_total=0,
                       loaded_note="the quality gate (--fail-on critical) stopped the run before loading")
    page.report["rejections"] = {}
    text = render(page)

    assert specs_of(text) == [] and 'data-charts-expected="0"' in text
    assert "No chart: the quality gate (--fail-on critical) stopped the run before loading." in text
    assert "No run history in the database." in text and "No row was rejected." in text


def test_skipped_rows_table_shows_every_count_of_each_entity():
    headers, rows = skipped_rows_table(render(sample_page()))

    assert headers == ["entity", "ignored columns", "blank rows skipped", "rows above the header skipped",
                       "control characters removed from text"]
    assert rows == {"doctors": ["1", "3", "1,234"], "appointments": ["2", "0", "5"]}


def test_skipped_rows_table_of_an_older_report_shows_dashes():
    page = sample_page()
    page.report["counts"] = {"doctors": {"read": 5, "loaded": 3, "rejected": 2, "blank_rows_skipped": 1},
                             "appointments": {"read": 16, "loaded": 7, "rejected": 9}}
    text = render(page)

    assert skipped_rows_table(text)[1] == {"doctors": ["1", "-", "-"], "appointments": ["-", "-", "-"]}
    assert "-: not counted (this run's stored report predates the count)." in text
    assert "predates the count" not in render(sample_page())
    page.report.pop("counts")  # a ledger row without counts
    assert skipped_rows_table(render(page))[1] == {"doctors": ["-", "-", "-"], "appointments": ["-", "-", "-"]}


def test_phi_note_heads_the_rejected_rows_and_patient_ids_appear_nowhere_else():
    page = sample_page()
    page.rejected_rows[0]["raw"]["patient_id"] = "777123"
    text = render(page)

    section = text[text.index('<section id="rejected-rows">'):]
    assert section.index("Protected health information") < section.index("<table")
    assert text.count("777123") == 1 and "777123" in section
    assert "The first 1 of 11 rejected rows. The full list is in reports/rejected_rows.csv." in section


def test_size_stays_bounded_with_large_inputs():
    long_cell = "x" * 50_000
    rows = [{"entity": "appointments", "row_number": i, "record_id": i, "reasons": ["invalid_booking_date"],
             "raw": {"booking_date": long_cell}} for i in range(1_000)]
    page = sample_page(rejected_rows=rows, rejected_total=1_000_000)
    page.report["unknown_status_values"] = {f"status {i}": 1 for i in range(100_000)}
    page.report["inputs"]["doctors"]["ignored_columns"] = [f"col{i}" for i in range(10_000)]

    started = time.perf_counter()
    text = render(page)
    elapsed = time.perf_counter() - started

    assert len(text.encode("utf-8")) < 5 * 1024 * 1024
    section = text[text.index('<section id="rejected-rows">'):]
    assert section.count("<tr><td>appointments</td>") == html_report.REJECTED_ROWS_SHOWN
    assert "... and 99,950 more values." in text
    assert elapsed < 1.0


def test_write_html_is_atomic(tmp_path):
    target = tmp_path / "out" / "quality_report.html"
    write_html(target, sample_page())
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["quality_report.html"]

    broken = sample_page()
    broken.trends = [{"run_id": "x", "started_at": "t", "metrics": {"m": float("nan")}, "loaded": float("inf")}]
    with pytest.raises(ValueError):
        write_html(target, broken)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")  # the old page is intact
    assert [p.name for p in target.parent.iterdir()] == ["quality_report.html"]


def test_notice_records_the_vendored_files():
    notice = (ASSETS / "NOTICE.md").read_text(encoding="utf-8")
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        digest = hashlib.sha256((ASSETS / name).read_bytes()).hexdigest()
        assert digest in notice, name
        assert "sourceMappingURL" not in (ASSETS / name).read_text(encoding="utf-8")
    for package, version in html_report.ASSET_VERSIONS.items():
        assert f"| {version} |" in notice and (ASSETS / f"LICENSE.{package}").is_file()


def test_first_rejected_rows_from_the_cleaner_frames():
    appointments = pd.DataFrame({
        "entity": "appointments", "source_row": [12, 3], "record_id": pd.array([None, 7], dtype="Int64"),
        "reasons": ["invalid_booking_id;duplicate_row", "unknown_doctor"],
        "booking_id": ["37X", "7"], "patient_id": [None, "34"],
    })
    doctors = pd.DataFrame({"entity": "doctors", "source_row": [5], "record_id": pd.array([None], dtype="Int64"),
                            "reasons": ["missing_name"], "doctor_id": ["5"], "name": [float("nan")]})

    rows = first_rejected_rows({"doctors": doctors, "appointments": appointments})

    assert rows == [
        {"entity": "doctors", "row_number": 5, "record_id": None, "reasons": ["missing_name"],
         "raw": {"doctor_id": "5", "name": None}},
        {"entity": "appointments", "row_number": 3, "record_id": 7, "reasons": ["unknown_doctor"],
         "raw": {"booking_id": "7", "patient_id": "34"}},
        {"entity": "appointments", "row_number": 12, "record_id": None,
         "reasons": ["invalid_booking_id", "duplicate_row"], "raw": {"booking_id": "37X", "patient_id": None}},
    ]
    assert len(first_rejected_rows({"appointments": appointments}, limit=1)) == 1
    json.dumps(rows)  # plain Python values only


def test_frame_aggregates_edge_cases():
    import datetime as dt

    from healthtech_etl.aggregates import frame_aggregates

    doctors = pd.DataFrame({"id": [1, 2, 3], "name": ["Dr. A", "Dr. B", "Dr. C"],
                            "specialty": ["Cardiology", None, ""]})
    appointments = pd.DataFrame({
        "doctor_id": [1, 1, 2, 9],  # 9: a doctor kept in the database by a merge load, not in this file
        "booking_date": pd.to_datetime([dt.datetime(1969, 12, 31, 23), dt.datetime(1969, 12, 31, 1),
                                        dt.datetime(2200, 1, 1), dt.datetime(2025, 10, 21, 9, 30)]),
        "status": ["confirmed", "cancelled", "confirmed", "unknown"],
    })

    result = frame_aggregates(doctors, appointments)

    assert result["per_day"] == [
        {"day": "1969-12-31", "status": "cancelled", "appointments": 1},
        {"day": "1969-12-31", "status": "confirmed", "appointments": 1},
        {"day": "2025-10-21", "status": "unknown", "appointments": 1},
        {"day": "2200-01-01", "status": "confirmed", "appointments": 1},
    ]
    assert result["per_doctor"] == [{"doctor": "Dr. A (1)", "confirmed": 1}, {"doctor": "Dr. B (2)", "confirmed": 1},
                                    {"doctor": "Dr. C (3)", "confirmed": 0}, {"doctor": "doctor 9 (9)", "confirmed": 0}]
    assert result["per_specialty"] == [
        {"specialty": "(none)", "ratio": 50.0, "confirmed": 1, "appointments": 2},  # doctors 2, 3 ("") and 9
        {"specialty": "Cardiology", "ratio": 50.0, "confirmed": 1, "appointments": 2},
    ]
    assert result["doctors_total"] == 4
    empty = frame_aggregates(doctors, appointments.iloc[:0])
    assert empty["per_day"] == [] and empty["per_specialty"] == [] and empty["doctors_total"] == 3
