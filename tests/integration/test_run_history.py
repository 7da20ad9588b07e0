"""Run history on the real PostgreSQL: `runs`, `rejections`, `report`, the HTML page every run
writes, and the SQL aggregates against a plain Python reference."""

import csv
import datetime as dt
import io
import json
import re
from collections import Counter, defaultdict

import pytest
from helpers import APPOINTMENT_ROWS, APPOINTMENTS_HEADER, AS_OF, DOCTOR_ROWS, DOCTORS_HEADER, fetch

from healthtech_etl.aggregates import frame_aggregates
from healthtech_etl.db import connect
from healthtech_etl.history import appointment_aggregates
from healthtech_etl.load import RunRecord, record_failed_run
from healthtech_etl.sample import write_sample_workbooks

FORMULA_ROW = ("@SUM(A1)", 12, 1, "10/21/2025", "confirmed")  # invalid_booking_id, a formula-like cell


def etl(run_cli, doctors, appointments, *extra):
    # --allow-older: the same files are loaded again (without it a re-run of loaded bytes is a no-op)
    return run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
                   "--allow-older", *extra)


@pytest.fixture
def two_runs(run_cli, make_xlsx, db_config, capsys):
    """Run 1: the test data plus a formula-like id (10 appointment rows rejected); run 2: 7 clean rows."""
    doctors = make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTOR_ROWS)
    first = make_xlsx("appointments1.xlsx", APPOINTMENTS_HEADER, APPOINTMENT_ROWS + [FORMULA_ROW])
    second = make_xlsx("appointments2.xlsx", APPOINTMENTS_HEADER, APPOINTMENT_ROWS[:7])
    assert etl(run_cli, doctors, first) == 0
    first_html = (doctors.parent / "reports" / "quality_report.html").read_text(encoding="utf-8")
    assert etl(run_cli, doctors, second) == 0
    capsys.readouterr()
    ids = [row[0] for row in fetch(db_config, "SELECT run_id FROM healthtech.etl_runs ORDER BY started_at")]
    return {"ids": ids, "first_html": first_html}


def specs_of(text):
    return [json.loads(body) for body in re.findall(r'<script type="application/json" id="spec-\d+">(.*?)</script>',
                                                    text, flags=re.S)]


def per_day_of(text):
    return next(s["data"]["values"] for s in specs_of(text) if s["encoding"].get("color", {}).get("field") == "status")


# --- runs ------------------------------------------------------------------------------------


def test_runs_lists_newest_first_as_table_and_json(run_cli, two_runs, capsys):
    first, second = two_runs["ids"]

    assert run_cli("runs") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["run", "id", "started", "(UTC)", "duration", "s", "source", "export", "mode",
                                "status", "files", "(doctors", "/", "appointments)", "read", "loaded", "rejected",
                                "quality"]
    assert lines[2].startswith(second) and lines[3].startswith(first)
    today = dt.date.today().isoformat()
    assert re.search(rf"{first} .* default +{today} +replace +succeeded +doctors\.xlsx / appointments1\.xlsx +17 +7"
                     r" +10 +critical", out)

    assert run_cli("runs", "--json") == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == [second, first]
    assert [(r["rows_read"], r["rows_loaded"], r["rows_rejected"], r["status"]) for r in runs] == [
        (7, 7, 0, "succeeded"), (17, 7, 10, "succeeded")]
    assert runs[1]["quality"] == "critical" and runs[1]["duration_seconds"] >= 0
    assert runs[1]["metrics"]["id_completeness"]["value"] == 88.24

    assert run_cli("runs", "--limit", "1", "--json") == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [second]


def test_runs_on_an_empty_database(run_cli, capsys):
    assert run_cli("runs") == 0
    assert capsys.readouterr().out == "no run recorded in this database yet\n"
    assert run_cli("runs", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []


# --- rejections --------------------------------------------------------------------------------


def test_rejections_filters(run_cli, two_runs, capsys):
    first, second = two_runs["ids"]

    assert run_cli("rejections") == 0  # the latest run: only its two doctors
    out = capsys.readouterr().out
    assert out.startswith(f"run {second}: 2 rejected rows\n")
    assert "invalid_doctor_id" in out and "missing_name" in out and "appointments" not in out

    assert run_cli("rejections", "--run-id", first, "--reason", "invalid_booking_id") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {first}: 2 rejected rows with reason invalid_booking_id\n")
    assert "booking_id='37X'" in out and "booking_id='@SUM(A1)'" in out

    assert run_cli("rejections", "--run-id", first, "--limit", "3") == 0
    out = capsys.readouterr().out
    # The total, not the page size: 2 doctors and 10 appointments rejected.
    assert out.startswith(f"run {first}: 12 rejected rows, showing the first 3; --limit 0 for all\n")
    assert len(out.splitlines()) == 1 + 2 + 3

    assert run_cli("rejections", "--run-id", first, "--reason", "unknown_doctor", "--limit", "0") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {first}: 1 rejected row with reason unknown_doctor\n")


def test_rejections_csv_is_complete_and_formula_escaped(run_cli, two_runs, db_config, capsys):
    first, _ = two_runs["ids"]

    assert run_cli("rejections", "--run-id", first, "--csv", "--limit", "0") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))

    stored = fetch(db_config, "SELECT entity, row_number, reasons FROM healthtech.etl_rejections "
                              "WHERE run_id = :r ORDER BY entity DESC, row_number", r=first)
    assert [(r["entity"], int(r["row_number"]), r["reasons"].split(";")) for r in rows] == [tuple(s) for s in stored]
    assert {r["run_id"] for r in rows} == {first}
    formula = next(r for r in rows if r["row_number"] == "18")
    assert formula["booking_id"] == "'@SUM(A1)" and formula["patient_id"] == "12"
    assert rows[0]["doctor_id"] == "X4" and rows[0]["booking_id"] == ""  # doctors' and appointments' raw columns


# --- report ------------------------------------------------------------------------------------


def test_report_rebuilds_an_earlier_run_from_the_database(run_cli, two_runs, tmp_path, capsys):
    first, second = two_runs["ids"]

    assert run_cli("report", "--run-id", first, "--report-dir", "rebuilt") == 0
    path = tmp_path / "rebuilt" / first / "quality_report.html"
    assert capsys.readouterr().out == f"wrote {path.relative_to(tmp_path)}\n"
    text = path.read_text(encoding="utf-8")

    assert f"run {first}" in text and second not in text  # trends stop at this run
    assert "Rebuilt from the database on" in text
    # The snapshot stored at load time: the same loaded-data chart as the page written by the run.
    assert per_day_of(text) == per_day_of(two_runs["first_html"])
    assert "booking_id</span>=&#x27;@SUM(A1)&#x27;" in text  # its rejected rows, escaped
    assert "The first 12 of 12 rejected rows." in text


def test_report_without_snapshot_uses_the_ledger(run_cli, two_runs, db_config, tmp_path, capsys):
    first, second = two_runs["ids"]
    connection = connect(db_config)
    try:
        connection.run("DELETE FROM healthtech.etl_run_reports")
    finally:
        connection.close()

    assert run_cli("report", "--run-id", first) == 0
    text = (tmp_path / "reports" / first / "quality_report.html").read_text(encoding="utf-8")
    assert "stored no report snapshot" in text and "No chart: the loaded tables now hold a later run&#x27;s data" in text
    assert '<td>id_completeness</td><td class="num">88.24 %</td>' in text

    assert run_cli("report") == 0  # the latest run: its data is what the tables hold
    text = (tmp_path / "reports" / second / "quality_report.html").read_text(encoding="utf-8")
    assert "From the tables as they are now" in text
    assert sum(v["appointments"] for v in per_day_of(text)) == 7


def test_report_errors_are_one_line_with_a_documented_code(run_cli, two_runs, capsys):
    assert run_cli("report", "--run-id", "nope") == 2
    err = capsys.readouterr().err
    assert err == ("healthtech-etl: error: run 'nope' not found in healthtech.etl_runs "
                   "(see 'healthtech-etl runs')\n")
    assert run_cli("rejections", "--run-id", "nope") == 2


def test_report_on_an_empty_database_and_an_unreachable_one(run_cli, capsys):
    assert run_cli("report") == 2
    assert "no run recorded in this database yet" in capsys.readouterr().err

    code = run_cli("runs", env={"DATABASE_URL": "postgresql://postgres@/postgres?host=/nonexistent/dir"})
    assert code == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot connect" in err.lower()


def run_ids(db_config, table):
    return sorted(row[0] for row in fetch(db_config, f"SELECT DISTINCT run_id FROM healthtech.{table}"))


def test_snapshots_keep_the_last_n_runs_and_a_pruned_run_says_so(run_cli, sample_inputs, db_config, tmp_path,
                                                                  capsys):
    for _ in range(4):  # N + 2 runs with --keep-runs N
        assert etl(run_cli, *sample_inputs, "--keep-runs", "2") == 0
    ids = [row[0] for row in fetch(db_config, "SELECT run_id FROM healthtech.etl_runs ORDER BY started_at")]
    assert len(ids) == 4  # the ledger keeps every run
    # The same rule as the rejected rows: the snapshots of the 2 most recent runs.
    assert run_ids(db_config, "etl_run_reports") == run_ids(db_config, "etl_rejections") == sorted(ids[2:])
    capsys.readouterr()

    for pruned in ids[:2]:
        assert run_cli("report", "--run-id", pruned) == 0  # rebuilt from the ledger, as for older runs
        path = tmp_path / "reports" / pruned / "quality_report.html"
        assert capsys.readouterr().out == (
            f"wrote {path.relative_to(tmp_path)}\nnote: the report snapshot of run {pruned} was pruned "
            "(etl_run_reports keeps the last --keep-runs runs): the page is rebuilt from etl_runs alone\n")
        text = path.read_text(encoding="utf-8")
        assert "This run&#x27;s report snapshot was pruned from healthtech.etl_run_reports" in text
        assert "stored no report snapshot" not in text
        assert "The rejected rows of this run are no longer in healthtech.etl_rejections (pruned)." in text
        metric = fetch(db_config, "SELECT metrics -> 'id_completeness' ->> 'value' FROM healthtech.etl_runs "
                                  "WHERE run_id = :r", r=pruned)[0][0]
        assert f'<td>id_completeness</td><td class="num">{float(metric):.2f} %</td>' in text  # from the ledger

    kept = ids[2]
    assert run_cli("report", "--run-id", kept) == 0
    path = tmp_path / "reports" / kept / "quality_report.html"
    assert capsys.readouterr().out == f"wrote {path.relative_to(tmp_path)}\n"
    assert "pruned" not in path.read_text(encoding="utf-8")

    # A failed run never stored a snapshot: its page does not claim one was pruned.
    failed = RunRecord("failed-run", dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), "d.xlsx", "0" * 64,
                       "a.xlsx", "0" * 64, counts={}, metrics={})
    assert record_failed_run(db_config, failed, "boom") == "failed"
    assert run_cli("report", "--run-id", "failed-run") == 0
    text = (tmp_path / "reports" / "failed-run" / "quality_report.html").read_text(encoding="utf-8")
    assert "stored no report snapshot" in text and "snapshot was pruned" not in text


def test_a_failing_snapshot_prune_leaves_the_load_committed(run_cli, sample_inputs, db_config, tmp_path, capsys):
    assert etl(run_cli, *sample_inputs) == 0
    connection = connect(db_config)
    try:  # a real server-side failure of the prune: the table refuses deletes
        connection.run("CREATE FUNCTION healthtech.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RAISE EXCEPTION 'deletes refused by a test trigger'; END $$")
        connection.run("CREATE TRIGGER refuse BEFORE DELETE ON healthtech.etl_run_reports "
                       "FOR EACH ROW EXECUTE FUNCTION healthtech.refuse()")
    finally:
        connection.close()

    assert etl(run_cli, *sample_inputs, "--keep-runs", "1") == 0
    ids = [row[0] for row in fetch(db_config, "SELECT run_id FROM healthtech.etl_runs ORDER BY started_at")]
    assert fetch(db_config, "SELECT status FROM healthtech.etl_runs ORDER BY started_at") == [["succeeded"]] * 2
    assert fetch(db_config, "SELECT count(*) FROM healthtech.appointments") == [[7]]
    # The load pruned its rejected rows; the snapshot prune was rolled back alone: this run's
    # snapshot is stored, the older one stays until a later run can prune it.
    assert run_ids(db_config, "etl_rejections") == [ids[1]]
    assert run_ids(db_config, "etl_run_reports") == sorted(ids)
    log = (tmp_path / "logs" / "etl_pipeline.log").read_text(encoding="utf-8")
    assert "older report snapshots not pruned (the next run tries again)" in log
    assert "deletes refused by a test trigger" in log
    text = (tmp_path / "reports" / "quality_report.html").read_text(encoding="utf-8")
    assert "Run history not shown" not in text and "Trends over the last 2 runs" in text

    connection = connect(db_config)
    try:
        connection.run("DROP TRIGGER refuse ON healthtech.etl_run_reports")
    finally:
        connection.close()
    assert etl(run_cli, *sample_inputs, "--keep-runs", "1") == 0
    latest = fetch(db_config, "SELECT run_id FROM healthtech.etl_runs ORDER BY started_at DESC LIMIT 1")[0][0]
    assert run_ids(db_config, "etl_run_reports") == [latest]


# --- the page every run writes -----------------------------------------------------------------


def test_every_run_writes_the_page_beside_the_json(run_cli, sample_inputs, tmp_path, db_config, capsys):
    assert etl(run_cli, *sample_inputs, "-v") == 0
    captured = capsys.readouterr()
    reports = tmp_path / "reports"
    report = json.loads((reports / "quality_report.json").read_text())

    assert sorted(p.name for p in reports.iterdir()) == ["quality_report.html", "quality_report.json",
                                                         "rejected_rows.csv"]
    text = (reports / "quality_report.html").read_text(encoding="utf-8")
    assert f"run {report['run_id']}" in text and "The full list is in rejected_rows.csv (beside this report)." in text
    assert len(specs_of(text)) == 6
    # -v: the summary once (stdout), not again in the console log (stderr)
    assert (captured.out + captured.err).count("data quality CRITICAL") == 1
    assert "quality_report.html" in captured.out
    stored = fetch(db_config, "SELECT run_id, report -> 'metrics', aggregates IS NOT NULL "
                              "FROM healthtech.etl_run_reports")
    assert stored == [[report["run_id"], report["metrics"], True]]


def test_a_gated_run_still_writes_its_page(run_cli, sample_inputs, tmp_path, db_config, capsys):
    assert etl(run_cli, *sample_inputs, "--fail-on", "critical") == 5
    text = (tmp_path / "reports" / "quality_report.html").read_text(encoding="utf-8")

    assert "No chart: the quality gate (--fail-on critical) stopped the run before loading." in text
    assert "load gated" in text and "load not_loaded" not in text
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text())
    # Its snapshot is stored, as the report says: nothing loaded (the data tables were never created).
    assert fetch(db_config, "SELECT run_id, report -> 'load_status', aggregates FROM healthtech.etl_run_reports") == [
        [report["run_id"], "gated", None]]
    assert fetch(db_config, "SELECT to_regclass('healthtech.appointments') IS NULL") == [[True]]


def test_quiet_prints_nothing(run_cli, sample_inputs, capsys):
    assert etl(run_cli, *sample_inputs, "--quiet") == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# --- SQL aggregates vs a plain reference -------------------------------------------------------


def test_sql_aggregates_match_a_plain_python_reference(run_cli, tmp_path, db_config):
    doctors, appointments = write_sample_workbooks(tmp_path / "in", rows=3000, seed=11)
    assert etl(run_cli, doctors, appointments, "--quiet") == 0
    rows = fetch(db_config, "SELECT a.booking_date, a.status, d.id, d.name, d.specialty "
                            "FROM healthtech.appointments a JOIN healthtech.doctors d ON d.id = a.doctor_id")
    all_doctors = fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors")

    per_day = Counter((when.date().isoformat(), status) for when, status, *_ in rows)
    confirmed = Counter(doctor for _, status, doctor, *_ in rows if status == "confirmed")
    by_specialty = defaultdict(lambda: [0, 0])
    for _, status, _, _, specialty in rows:
        by_specialty[specialty or "(none)"][0] += status == "confirmed"
        by_specialty[specialty or "(none)"][1] += 1
    ranked = sorted(all_doctors, key=lambda d: (-confirmed[d[0]], d[0]))[:30]

    connection = connect(db_config)
    try:
        aggregates = appointment_aggregates(connection)
    finally:
        connection.close()

    assert {(v["day"], v["status"]): v["appointments"] for v in aggregates["per_day"]} == dict(per_day)
    assert aggregates["per_doctor"] == [{"doctor": f"{name} ({i})", "confirmed": confirmed[i]}
                                        for i, name, _ in ranked]
    assert {v["specialty"]: (v["confirmed"], v["appointments"]) for v in aggregates["per_specialty"]} == {
        name: tuple(sums) for name, sums in by_specialty.items()}
    assert aggregates["doctors_total"] == len(all_doctors)
    # The fast path (pandas, on the frames the run loaded, stored with the run) gives the same.
    stored = fetch(db_config, "SELECT aggregates FROM healthtech.etl_run_reports")
    assert stored == [[aggregates]]
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text())
    assert sum(per_day.values()) == report["counts"]["appointments"]["loaded"] > 2500


def test_frame_aggregates_match_sql_on_the_same_rows(run_cli, tmp_path, db_config):
    import pandas as pd

    doctors, appointments = write_sample_workbooks(tmp_path / "in", rows=1500, seed=3)
    assert etl(run_cli, doctors, appointments, "--quiet") == 0
    doctor_rows = fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id")
    appointment_rows = fetch(db_config, "SELECT doctor_id, booking_date, status FROM healthtech.appointments")
    frames = (pd.DataFrame(doctor_rows, columns=["id", "name", "specialty"]),
              pd.DataFrame(appointment_rows, columns=["doctor_id", "booking_date", "status"]))

    connection = connect(db_config)
    try:
        assert frame_aggregates(*frames, top_doctors=500) == appointment_aggregates(connection, top_doctors=500)
    finally:
        connection.close()
