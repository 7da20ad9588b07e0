"""quality_report.html rendering: self-contained, escaped, generic over metrics, bounded in size."""

import hashlib
import html
import json
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import skipped_rows_table

from healthtech_etl import html_charts, html_report, quality
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
            "id_completeness": {"value": 87.5, "threshold": None, "critical_threshold": 100.0, "alert_when": "below",
                                "status": "critical", "description": "ids present"},
            "duplicate_rate": {"value": 1.25, "threshold": 5.0, "critical_threshold": None, "alert_when": "above",
                               "status": "ok", "description": "dups"},
            # a metric this module has never heard of is rendered like the others
            "acceptance_rate": {"value": 80.0, "threshold": 90.0, "critical_threshold": 50.0, "alert_when": "below",
                                "status": "warning", "description": "rows loaded"},
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
        "settings": {"day_first": False, "horizon_days": 365, "fail_on": "never", "mode": "replace"},
        "verdict": "Loaded 7 of 16 appointment rows (43.75 %); most rejections: unknown doctor 105 (3 rows).",
        "contract": {"source": "contracts/clinic.toml", "sha256": "c" * 64, "metrics": {}, "checks": []},
        "checks": [
            {"entity": "appointments", "column": "booking_date", "check": "range", "expected": "2025-01-01 .. 2026-12-31",
             "value": "2025-10-21 .. 2300-01-01", "status": "critical", "detail": f"1 date after the range {EVIL}"},
            {"entity": "appointments", "column": "patient_id", "check": "required_share", "expected": ">= 90 %",
             "value": "94.12 %", "status": "ok", "detail": "present in 16 of 17 rows"},
        ],
        "offending": {
            "appointments": {
                "unknown_doctor": {"count": 3, "column": "doctor_id", "first_row": 12, "last_row": 840,
                                   "known_doctor_ids": {"count": 3, "min": 1, "max": 3, "basis": "doctors_in_file"},
                                   "top_values": [{"value": "105", "count": 2, "first_row": 12, "last_row": 40},
                                                  {"value": EVIL, "count": 1, "first_row": 840, "last_row": 840}]},
                "booking_date_out_of_range": {
                    "count": 2, "column": "booking_date", "first_row": 5, "last_row": 9,
                    "top_values": [{"value": "2300-01-01", "count": 2, "first_row": 5, "last_row": 9}],
                    "date_range": {"found_min": "2026-10-24", "found_max": "2355-10-24",
                                   "allowed_min": "2025-01-01", "allowed_max": "2027-11-01"}},
                "invalid_patient_id": {"count": 1, "column": "patient_id", "first_row": 7, "last_row": 7,
                                       "top_values": [{"value": "555999", "count": 1, "first_row": 7,
                                                       "last_row": 7}]},
                "duplicate_row": {"count": 1, "column": None, "first_row": 14, "last_row": 14, "top_values": []},
            },
            "doctors": {"missing_name": {"count": 5, "column": "name", "first_row": 3, "last_row": 9, "top_values": []}},
        },
        "profile": {
            "appointments": {
                "doctor_id": {"rows": 16, "nulls": 0, "distinct": 4, "min": "1", "max": "105",
                              "top_values": [{"value": "1", "count": 9}, {"value": "105", "count": 2}]},
                "patient_id": {"rows": 16, "nulls": 1, "distinct": 5, "min": "444001", "max": "444999",
                               "top_values": [{"value": "444001", "count": 4}]},
            },
            "doctors": {"name": {"rows": 5, "nulls": 1, "distinct": 4, "min": "Dr. A", "max": EVIL,
                                 "top_values": [{"value": EVIL, "count": 1}]}},
        },
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
    assert "warning if &lt; 90, critical if &lt; 50" in text and "80.00 %" in text  # both levels, every metric
    assert "no warning level, critical if &lt; 100" in text and "warning if &gt; 5, no critical level" in text


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


# --- the verdict, the offending values, the checks and the profile ----------------------------


def section_of(text: str, name: str) -> str:
    start = text.index(f'<section id="{name}"')
    return text[start:text.index("</section>", start)]


def table_rows(section: str) -> list:
    """The body rows of every table in ``section``, as lists of cell words (tags stripped, one line each)."""
    def words(cell):
        return html.unescape(re.sub(r"<[^>]+>", "", re.sub(r'<span class="tvi?\b[^"]*">', " ", cell))).split()

    body = "".join(re.findall(r"<tbody>(.*?)</tbody>", section, flags=re.S))
    return [[words(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body)]


def test_the_verdict_heads_the_page_and_says_why():
    page = sample_page()
    text = render(page)
    verdict = section_of(text, "verdict")

    assert text.index('<section id="verdict"') < text.index("<section", text.index('<section id="verdict"') + 1)
    assert text.index("</header>") < text.index('<section id="verdict"') < text.index('<section id="run"')
    expected = quality.verdict(page.report)
    assert expected.startswith("Loaded 7 of 16 appointments")
    assert f'<p class="verdict-sentence">{html.escape(expected)}</p>' in verdict
    assert "The data was loaded anyway: the quality gate is --fail-on never, which does not stop a critical run." \
        in verdict
    assert "Quality is <strong>CRITICAL</strong> because:" in verdict
    causes = [html.unescape(re.sub(r"<[^>]+>", "", item)) for item in re.findall(r"<li>(.*?)</li>", verdict)]
    assert causes == [
        "critical id_completeness 87.50 % (no warning level, critical if < 100)",
        "warning acceptance_rate 80.00 % (warning if < 90, critical if < 50)",
        f"critical appointments.booking_date range: found 2025-10-21 .. 2300-01-01, expected 2025-01-01 .. "
        f"2026-12-31 - 1 date after the range {EVIL}",
    ]  # the ok metric and the ok check are not causes
    assert "<img src=x" not in verdict


@pytest.mark.parametrize("load_status, sentence", [
    ("gated", "Nothing loaded: data quality CRITICAL stopped the run (--fail-on critical)"),
    ("failed", "Nothing loaded: the load failed and was rolled back"),
    ("not_loaded", "Not loaded yet:"),
])
def test_a_run_that_loaded_nothing_never_shows_counts_as_loaded(load_status, sentence):
    page = sample_page(aggregates=None)
    page.report.update(load_status=load_status, settings={"fail_on": "critical"})
    if load_status == "gated":  # as the pipeline writes it now; the others as older reports stored them
        page.report["counts"] = {entity: dict(numbers, loaded=0, would_load=numbers["loaded"])
                                 for entity, numbers in page.report["counts"].items()}
    text = render(page)

    verdict = section_of(text, "verdict")
    assert f'<p class="verdict-sentence">{html.escape(sentence)}' in verdict and "loaded anyway" not in verdict
    run = section_of(text, "run")
    headers = re.findall(r"<th>(.*?)</th>", run[run.index("<thead>"):])
    assert headers == ["entity", "file", "SHA-256", "reader", "read", "loaded", "would load", "rejected",
                       "blank rows skipped"]
    rows = {cells[0][0]: [" ".join(cell) for cell in cells[4:]] for cells in table_rows(run[run.index("<thead>"):])}
    assert rows == {"doctors": ["5", "0", "3", "2", "1"], "appointments": ["16", "0", "7", "9", "2"]}


def test_a_loaded_run_shows_its_loaded_counts():
    run = section_of(render(sample_page()), "run")
    headers = re.findall(r"<th>(.*?)</th>", run[run.index("<thead>"):])

    assert headers[4:] == ["read", "loaded", "rejected", "blank rows skipped"]
    assert "contracts/clinic.toml (SHA-256 " + "c" * 64 + ")" in run


def test_offending_values_per_entity_and_reason():
    text = render(sample_page())
    section = section_of(text, "offending")

    rows = [[" ".join(cell) for cell in row] for row in table_rows(section)]
    assert [row[:5] for row in rows] == [  # per entity, most rows first
        ["appointments", "unknown_doctor", "3", "doctor_id", "12\u2013840"],
        ["appointments", "booking_date_out_of_range", "2", "booking_date", "5\u20139"],
        ["appointments", "invalid_patient_id", "1", "patient_id", "7"],
        ["appointments", "duplicate_row", "1", "-", "14"],
        ["doctors", "missing_name", "5", "name", "3\u20139"],  # entity by entity
    ]
    assert rows[0][5] == f"'105' \u00d72 (rows 12\u201340) {EVIL!r} \u00d71 (rows 840)"
    assert rows[1][5] == "'2300-01-01' \u00d72 (rows 5\u20139)"
    assert rows[0][6] == "not in the doctors file (3 ids, 1..3)"
    assert rows[1][6] == "booking dates found 2026-10-24 .. 2355-10-24 allowed 2025-01-01 .. 2027-11-01"
    assert rows[2][6] == rows[3][6] == ""
    assert rows[2][5] == "values withheld (patient ids: see the rejected rows)"
    assert "555999" not in text  # an invalid patient id is still a patient id
    assert "<img src=x" not in section and html.escape(repr(EVIL)) in section


def test_column_checks_and_profile_tables():
    text = render(sample_page())

    checks = [[" ".join(cell) for cell in row] for row in table_rows(section_of(text, "checks"))]
    assert checks[1] == ["appointments", "patient_id", "required_share", ">= 90 %", "94.12 %", "ok",
                         "present in 16 of 17 rows"]
    assert checks[0][5] == "critical" and checks[0][6] == f"1 date after the range {EVIL}"
    profile = section_of(text, "profile")
    rows = [[" ".join(cell) for cell in row] for row in table_rows(profile)]
    assert rows[0] == ["doctor_id", "16", "0", "4", "1", "105", "'1' \u00d79 '105' \u00d72"]
    assert rows[1][:6] == ["patient_id", "16", "1", "5", "-", "-"]  # patient ids: counts only
    assert "444001" not in text and "444999" not in text
    assert profile.index("<h3>appointments</h3>") < profile.index("<h3>doctors</h3>")
    assert "<img src=x" not in profile


def test_an_older_report_renders_no_new_section():
    page = sample_page()
    for key in ("checks", "offending", "profile", "contract", "verdict"):
        page.report.pop(key)
    for metric in page.report["metrics"].values():
        metric.pop("critical_threshold")
    page.report["metrics"]["id_completeness"]["threshold"] = 100.0
    text = render(page)

    for name in ("checks", "offending", "profile"):
        assert f'<section id="{name}"' not in text
    assert "<th>contract</th>" not in text
    assert "alert if &lt; 100" in text and "critical if" not in text  # one level, as it was stored
    assert 'id="verdict"' in text and "Quality is <strong>CRITICAL</strong> because:" in text
    page.report["checks"] = []
    assert "The contract declares no column checks." in render(page)


def test_values_are_written_on_the_bars():
    specs = specs_of(render(sample_page()))

    for field in ("reason", "doctor", "specialty"):
        spec = next(s for s in specs if s["encoding"]["y"]["field"] == field)
        marks = [layer["mark"]["type"] for layer in spec["layer"]]
        assert marks == ["bar", "text"], field
        assert spec["layer"][1]["encoding"]["text"]["field"] == spec["encoding"]["x"]["field"]
    per_day = next(s for s in specs if s["encoding"].get("color", {}).get("field") == "status")
    assert per_day["layer"][1]["encoding"]["text"] == {"field": "appointments", "aggregate": "sum",
                                                       "type": "quantitative"}
    many_days = [{"day": f"2025-{1 + i // 28:02d}-{1 + i % 28:02d}", "status": "confirmed", "appointments": 1}
                 for i in range(html_charts.DAY_LABELS_MAX + 1)]
    spec = next(s for s in specs_of(render(sample_page(aggregates={"per_day": many_days})))
                if s["encoding"].get("color", {}).get("field") == "status")
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar"]  # too dense to label


def trend(run_id, file=None, loaded=7):
    run = {"run_id": run_id, "started_at": f"2025-11-01T10:0{run_id[-1]}:00+00:00", "status": "succeeded",
           "metrics": {"acceptance_rate": 80.0}, "loaded": loaded, "rejected": 9}
    if file is not None:
        run["appointments_file"] = file
    return run


def test_trends_follow_the_run_order_with_one_line_per_file():
    page = sample_page(trends=[trend("r1", "a.xlsx"), trend("r2", "b.xlsx", 70), trend("r3", "a.xlsx", 8)])
    specs = [s for s in specs_of(render(page)) if s["encoding"]["x"]["field"] == "seq"]

    assert len(specs) == 2
    for spec in specs:
        assert spec["encoding"]["x"]["type"] == "ordinal"  # the run sequence, not the clock
        assert spec["encoding"]["strokeDash"]["field"] == "file"
    rows = [(v["seq"], v["file"], v["rows"]) for v in specs[1]["data"]["values"] if v["series"] == "loaded"]
    assert rows == [(1, "a.xlsx", 7), (2, "b.xlsx", 70), (3, "a.xlsx", 8)]

    for trends in ([trend("r1"), trend("r2")], [trend("r1", "a.xlsx"), trend("r2", "a.xlsx")]):
        # a history without file names, or of one file: one line per series
        specs = [s for s in specs_of(render(sample_page(trends=trends))) if s["encoding"]["x"]["field"] == "seq"]
        assert len(specs) == 2 and all("strokeDash" not in s["encoding"] for s in specs)
        assert [v["seq"] for v in specs[0]["data"]["values"]] == [1, 2]


def test_rejected_rows_are_collapsed_and_paged():
    rows = [{"entity": "appointments", "row_number": i, "record_id": i, "reasons": ["unknown_doctor"],
             "raw": {"booking_id": str(i), "note": "word " * 20}} for i in range(60)]
    page = sample_page(rejected_rows=rows, rejected_total=60, rejections_href="rejected_rows.csv")
    section = section_of(render(page), "rejected-rows")

    assert re.search(r"<details><summary>[^<]*</summary><div data-pager=\"25\">", section)  # closed, 25 a page
    assert section.index("Protected health information") < section.index("<details>")
    assert section.count("<tr><td>appointments</td>") == 60  # all in the file: paging needs no network
    assert '<a href="./rejected_rows.csv">Open rejected_rows.csv</a>' in section
    long_pair = re.search(r'<span class="cut" title="([^"]*)"><span class="k">note</span>', section)
    assert long_pair and html.unescape(long_pair.group(1)) == f"note={'word ' * 20!r}"
    assert '<span class="cut"><span class="k">booking_id</span>=&#x27;7&#x27;</span>' in section  # short: no title
    assert "<a " not in section_of(render(sample_page()), "rejected-rows")  # no CSV beside it: no link
    css = render(page)[:5000]
    assert "break-all" not in css and ".cut{" in css
