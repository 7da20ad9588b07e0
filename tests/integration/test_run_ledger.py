"""Every run is on record (issue 19): a run stopped by the quality gate is a ``gated`` row of
etl_runs with its reason, rejected rows and report snapshot (nothing of the data tables touched),
listed by `runs` and rebuilt by `report`; no run that loaded nothing counts rows as loaded; the
listing commands show totals, the workbook's column order, the valid reason codes, mode, files
and the run's whole duration; each command's --help lists its own options."""

import csv
import dataclasses
import io
import json
import re

import pytest
from helpers import APPOINTMENT_ROWS, APPOINTMENTS_HEADER, AS_OF, DOCTOR_ROWS, DOCTORS_HEADER, fetch, snapshot

from healthtech_etl import history
from healthtech_etl.db import connect
from healthtech_etl.sample import write_sample_workbooks
from healthtech_etl.schema import REASON_CODES

GATE_REASON = re.compile(r"data quality is critical and --fail-on=critical: .*acceptance_rate [0-9.]+ % < .*"
                         r"\(critical\): nothing loaded")


def etl(run_cli, doctors, appointments, *extra):
    # --allow-older: the same files are loaded again (without it a re-run of loaded bytes is a no-op)
    return run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
                   "--allow-older", *extra)


def run_ids(db_config):
    return [row[0] for row in fetch(db_config, "SELECT run_id FROM healthtech.etl_runs ORDER BY started_at")]


def run_table_counts(page: str) -> dict:
    """{entity: {column: cell}} of the page's input table (entity, file, SHA-256, reader, counts...)."""
    section = page[page.index('<section id="run">'):]
    table = section[section.index("<thead><tr><th>entity</th>"):section.index("</section>")]
    headers = re.findall(r"<th>(.*?)</th>", table)[4:]
    return {cells[0]: dict(zip(headers, cells[4:])) for cells in
            (re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr><td>.*?</tr>", table))}


@pytest.fixture
def gated(run_cli, sample_inputs, db_config, tmp_path, capsys):
    """A loaded run, then the same files stopped by --fail-on critical: the gated run's id and its line."""
    assert etl(run_cli, *sample_inputs) == 0
    before = snapshot(db_config)
    capsys.readouterr()
    assert etl(run_cli, *sample_inputs, "--fail-on", "critical") == 5
    err = capsys.readouterr().err
    assert snapshot(db_config) == before  # the data tables as they were
    loaded_run, gated_run = run_ids(db_config)
    return {"id": gated_run, "loaded_id": loaded_run, "err": err,
            "report": json.loads((tmp_path / "reports" / "quality_report.json").read_text())}


def test_a_gated_run_is_in_the_ledger_with_its_reason_rejections_and_snapshot(gated, db_config):
    run_id = gated["id"]
    assert gated["err"].count("\n") == 1 and gated["err"].startswith("healthtech-etl: error: ")
    assert gated["err"].rstrip().endswith("nothing loaded (see reports/quality_report.json)")

    (status, error, started, finished, counts), = fetch(
        db_config, "SELECT status, error, started_at, finished_at, counts FROM healthtech.etl_runs WHERE run_id = :r",
        r=run_id)
    assert status == "gated" and GATE_REASON.fullmatch(error)
    assert finished >= started
    # Nothing loaded: the valid rows "would load", in the ledger as in the report.
    assert counts["appointments"]["loaded"] == 0 and counts["appointments"]["would_load"] == 7
    assert counts["doctors"]["loaded"] == 0 and counts["doctors"]["would_load"] == 3
    report = gated["report"]
    assert report["run_id"] == run_id and report["load_status"] == "gated" and report["counts"] == counts

    stored = fetch(db_config, "SELECT entity, count(*) FROM healthtech.etl_rejections WHERE run_id = :r "
                              "GROUP BY entity ORDER BY entity", r=run_id)
    assert stored == [["appointments", 9], ["doctors", 2]]
    snapshots = fetch(db_config, "SELECT report -> 'load_status', report -> 'counts', aggregates "
                                 "FROM healthtech.etl_run_reports WHERE run_id = :r", r=run_id)
    assert snapshots == [["gated", counts, None]]


def test_runs_lists_the_gated_run_and_nothing_as_loaded(run_cli, gated, capsys):
    assert run_cli("runs") == 0
    out = capsys.readouterr().out
    assert re.search(rf"^{gated['id']} .* replace +gated +doctors\.xlsx / appointments\.xlsx +16 +0 +9 +critical$",
                     out, flags=re.M)
    assert re.search(rf"^{gated['loaded_id']} .* replace +succeeded .* +16 +7 +9 +critical$", out, flags=re.M)

    assert run_cli("runs", "--json") == 0
    latest = json.loads(capsys.readouterr().out)[0]
    assert (latest["run_id"], latest["status"], latest["rows_loaded"]) == (gated["id"], "gated", 0)
    assert GATE_REASON.fullmatch(latest["error"]) and latest["counts"]["appointments"]["would_load"] == 7


def test_report_rebuilds_the_gated_runs_page(run_cli, gated, db_config, tmp_path, capsys):
    assert run_cli("report", "--run-id", gated["id"]) == 0
    text = (tmp_path / "reports" / gated["id"] / "quality_report.html").read_text(encoding="utf-8")

    assert "load gated" in text and "load not_loaded" not in text
    assert "No chart: the quality gate (--fail-on critical) stopped the run before loading." in text
    assert "stored no report snapshot" not in text  # from its snapshot
    counts = run_table_counts(text)
    assert counts["appointments"]["loaded"] == "0" and counts["appointments"]["would load"] == "7"
    assert counts["doctors"]["loaded"] == "0"
    assert "The first 11 of 11 rejected rows." in text

    page = history.page_for_run(db_config, gated["id"])
    assert page.report["load_status"] == "gated" and page.ledger["status"] == "gated"
    assert {entity: c["loaded"] for entity, c in page.report["counts"].items()} == {"doctors": 0, "appointments": 0}


def test_rejections_of_a_gated_run(run_cli, gated, capsys):
    assert run_cli("rejections", "--run-id", gated["id"], "--reason", "unknown_doctor") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"run {gated['id']}: 1 rejected row with reason unknown_doctor\n")
    assert re.search(r"appointments +appointments\.xlsx +11 +109 +unknown_doctor", out)


def test_a_failed_load_counts_nothing_as_loaded(run_cli, sample_inputs, db_config, tmp_path, capsys):
    assert etl(run_cli, *sample_inputs) == 0
    connection = connect(db_config)
    try:  # a real server-side failure in the middle of the load
        connection.run("CREATE FUNCTION healthtech.boom() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$")
        connection.run("CREATE TRIGGER boom BEFORE INSERT ON healthtech.appointments "
                       "FOR EACH ROW EXECUTE FUNCTION healthtech.boom()")
    finally:
        connection.close()
    assert etl(run_cli, *sample_inputs) == 4
    failed = run_ids(db_config)[1]
    (status, counts), = fetch(db_config, "SELECT status, counts FROM healthtech.etl_runs WHERE run_id = :r", r=failed)
    assert status == "failed" and counts["appointments"]["loaded"] == 0 and counts["appointments"]["would_load"] == 7
    report = json.loads((tmp_path / "reports" / "quality_report.json").read_text())
    assert report["load_status"] == "failed" and report["counts"] == counts
    capsys.readouterr()

    assert run_cli("report", "--run-id", failed) == 0
    text = (tmp_path / "reports" / failed / "quality_report.html").read_text(encoding="utf-8")
    assert "No chart: the load failed and was rolled back; the tables keep the previous data." in text
    assert run_table_counts(text)["appointments"]["loaded"] == "0"


def test_gated_while_the_database_is_unreachable_exits_5_and_is_recorded_later(
        run_cli, sample_inputs, db_config, tmp_path, monkeypatch, capsys):
    assert etl(run_cli, *sample_inputs) == 0
    capsys.readouterr()
    real_connect = history.connect
    # The server is reachable when the run starts; when the gate records the run, it is not.
    monkeypatch.setattr(history, "connect", lambda config: real_connect(
        dataclasses.replace(config, unix_socket_dir=str(tmp_path / "no-server-here"), host=None)))
    assert etl(run_cli, *sample_inputs, "--fail-on", "critical") == 5
    line, = capsys.readouterr().err.strip().splitlines()
    assert GATE_REASON.search(line) and "Traceback" not in line
    assert line.endswith(" not in etl_runs (the next run that reaches PostgreSQL records it)")
    gated_run = line.split("; run ")[1].split()[0]
    assert fetch(db_config, "SELECT count(*) FROM healthtech.etl_runs WHERE run_id = :r", r=gated_run) == [[0]]
    backlog = (tmp_path / "logs" / "unrecorded_runs.jsonl").read_text().splitlines()
    assert [json.loads(entry)["status"] for entry in backlog] == ["gated"]

    monkeypatch.setattr(history, "connect", real_connect)
    assert etl(run_cli, *sample_inputs) == 0
    runs = fetch(db_config, "SELECT run_id, status, error, finished_at FROM healthtech.etl_runs ORDER BY started_at")
    assert [(run_id == gated_run, status) for run_id, status, *_ in runs] == [
        (False, "succeeded"), (True, "gated"), (False, "succeeded")]
    assert GATE_REASON.fullmatch(runs[1][2])
    assert runs[1][3] < runs[2][3]  # it ended when it was gated, not when the next run recorded it
    assert not (tmp_path / "logs" / "unrecorded_runs.jsonl").exists()


def test_a_ledger_of_an_older_release_takes_gated_runs(run_cli, sample_inputs, db_config, pg_server, tmp_path, capsys):
    older = pg_server.with_database(f"{db_config.database}_old")
    admin = connect(pg_server)
    try:
        admin.run(f"CREATE DATABASE {older.database}")
    finally:
        admin.close()
    try:
        connection = connect(older)
        try:  # etl_runs as the previous release created it: its status CHECK lacks 'gated'
            connection.run("CREATE SCHEMA healthtech")
            connection.run("""CREATE TABLE healthtech.etl_runs (
                run_id text PRIMARY KEY, started_at timestamptz NOT NULL, finished_at timestamptz,
                status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
                doctors_file text, doctors_sha256 text, appointments_file text, appointments_sha256 text,
                counts jsonb, metrics jsonb, error text)""")
            # A failed run recorded by that release still counted its valid rows as loaded.
            connection.run("INSERT INTO healthtech.etl_runs (run_id, started_at, finished_at, status, counts) VALUES "
                           "('old', now() - interval '1 hour', now() - interval '1 hour', 'failed', "
                           """'{"appointments": {"read": 16, "loaded": 7, "rejected": 9}}')""")
        finally:
            connection.close()
        code = run_cli("etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1]),
                       "--as-of", AS_OF, "--fail-on", "critical", env={"DATABASE_URL": older.url()})
        assert code == 5
        assert fetch(older, "SELECT run_id = 'old', status FROM healthtech.etl_runs ORDER BY started_at") == [
            [True, "failed"], [False, "gated"]]
        assert "'gated'" in fetch(older, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                         "WHERE conname = 'etl_runs_status_check'")[0][0]
        # Only the ledger tables: a gated run creates no data table.
        assert fetch(older, "SELECT to_regclass('healthtech.appointments') IS NULL") == [[True]]
        capsys.readouterr()
        assert run_cli("runs", "--json", env={"DATABASE_URL": older.url()}) == 0
        old = json.loads(capsys.readouterr().out)[1]
        assert old["run_id"] == "old" and old["rows_loaded"] == 0 and old["counts"]["appointments"] == {
            "read": 16, "loaded": 0, "would_load": 7, "rejected": 9}
    finally:
        admin = connect(pg_server)
        try:
            admin.run(f"DROP DATABASE IF EXISTS {older.database} WITH (FORCE)")
        finally:
            admin.close()


# --- runs: mode, files, the whole run's duration ---------------------------------------------------


def test_runs_show_mode_and_files(run_cli, make_xlsx, db_config, tmp_path, capsys):
    doctors = make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTOR_ROWS)
    long_name = make_xlsx("appointments_export_clinic_north_2025-11.xlsx", APPOINTMENTS_HEADER, APPOINTMENT_ROWS)
    assert etl(run_cli, doctors, long_name) == 0
    assert etl(run_cli, doctors, long_name, "--mode", "merge") == 0
    capsys.readouterr()

    assert run_cli("runs") == 0
    out = capsys.readouterr().out
    merge_line, replace_line = out.splitlines()[2:4]
    assert re.search(r" merge +succeeded +doctors\.xlsx / appointments_\.\.\.2025-11\.xlsx +16 +7 +9 ", merge_line)
    assert re.search(r" replace +succeeded +doctors\.xlsx / appointments_\.\.\.2025-11\.xlsx ", replace_line)

    assert run_cli("runs", "--json") == 0
    replace_run = json.loads(capsys.readouterr().out)[1]
    assert replace_run["mode"] == "replace"
    assert replace_run["appointments_file"] == "appointments_export_clinic_north_2025-11.xlsx"

    connection = connect(db_config)
    try:
        trends = history.trend_runs(connection)
    finally:
        connection.close()
    assert [(t["mode"], t["appointments_file"]) for t in trends] == [
        ("replace", long_name.name), ("merge", long_name.name)]


def test_the_duration_is_the_whole_run(run_cli, tmp_path, capsys):
    doctors, appointments = write_sample_workbooks(tmp_path / "in", rows=3000, seed=5)
    assert etl(run_cli, doctors, appointments, "--quiet") == 0
    timings = json.loads((tmp_path / "reports" / "quality_report.json").read_text())["timings_seconds"]
    assert run_cli("runs", "--json") == 0
    (run,) = json.loads(capsys.readouterr().out)
    # From the run's start (before the read) to its COMMIT: read + clean + load (less the COMMIT and the
    # connection's close, which the load's timer counts too: a few ms).
    assert run["duration_seconds"] >= timings["read"] + timings["clean"] + timings["load"] - 0.02
    assert timings["read"] + timings["clean"] > 0.02  # (so that a duration of the load alone would fail)


def test_file_names_drop_folders_and_s3_versions():
    assert history.file_name("s3://bucket/in/2025-11/appointments.xlsx?versionId=3Lg.x") == "appointments.xlsx"
    assert history.file_name("appointments.xlsx") == "appointments.xlsx"
    assert history.file_name(None) is None


# --- rejections: totals, reason codes, column order ------------------------------------------------


def test_rejections_say_the_total_and_list_cells_in_sheet_order(run_cli, make_xlsx, tmp_path, capsys):
    doctors = make_xlsx("doctors.xlsx", DOCTORS_HEADER, DOCTOR_ROWS)
    rows = APPOINTMENT_ROWS + [(1000 + i, 5, 99, "10/21/2025", "confirmed") for i in range(120)]  # unknown_doctor
    appointments = make_xlsx("appointments.xlsx", APPOINTMENTS_HEADER, rows)
    assert etl(run_cli, doctors, appointments) == 0
    capsys.readouterr()

    assert run_cli("rejections") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": 131 rejected rows, showing the first 100; --limit 0 for all")
    assert len(out) == 1 + 2 + 100
    assert run_cli("rejections", "--reason", "unknown_doctor", "--limit", "5") == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(
        ": 121 rejected rows with reason unknown_doctor, showing the first 5; --limit 0 for all")
    assert run_cli("rejections", "--limit", "0") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": 131 rejected rows") and len(out) == 1 + 2 + 131

    # The raw cells in the workbook's column order (jsonb keeps none).
    doctor_line = next(line for line in out if " missing_name " in line)
    assert re.search(r"doctor_id='5' name='' specialty='Neurology'$", doctor_line)
    booking_line = next(line for line in out if " invalid_booking_id " in line)
    assert re.search(r"booking_id='37X' patient_id='9' doctor_id='1' booking_date='10/21/2025' status='confirmed'$",
                     booking_line)

    # --csv: rejected_rows.csv's columns and rows, after the run id.
    assert run_cli("rejections", "--csv", "--limit", "0") == 0
    from_db = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    with (tmp_path / "reports" / "rejected_rows.csv").open(newline="", encoding="utf-8") as handle:
        from_file = list(csv.reader(handle))
    assert [row[1:] for row in from_db] == from_file


def test_an_unknown_reason_code_is_a_usage_error_listing_the_codes(run_cli, capsys):
    # A usage error, found before the database is even asked.
    with pytest.raises(SystemExit) as exited:
        run_cli("rejections", "--reason", "bogus", env={"DATABASE_URL": "postgresql://u@/db?host=/nonexistent"})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown reason code 'bogus'" in err
    assert all(code in err for code in REASON_CODES)


# --- each command's own options -------------------------------------------------------------------

LOGGING = {"--log-dir", "--log-max-bytes", "--verbose"}


@pytest.mark.parametrize("command, expected", [
    ("runs", {"--limit", "--json"} | LOGGING),
    ("rejections", {"--run-id", "--reason", "--limit", "--csv"} | LOGGING),
    ("report", {"--run-id", "--report-dir", "--json-logs"} | LOGGING),
    ("queries", {"--report-dir", "--json-logs"} | LOGGING),
])
def test_each_command_help_lists_its_own_options(command, expected, run_cli, capsys):
    with pytest.raises(SystemExit) as exited:
        run_cli(command, "--help")
    assert exited.value.code == 0
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", capsys.readouterr().out))
    assert options == expected | {"--help"}


def test_the_etl_keeps_every_option(run_cli, capsys):
    with pytest.raises(SystemExit):
        run_cli("etl", "--help")
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", capsys.readouterr().out))
    assert {"--report-dir", "--quiet", "--json-logs", "--fail-on", "--mode", "--keep-runs"} | LOGGING <= options


def test_listing_commands_refuse_other_commands_options_and_log_where_told(run_cli, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        run_cli("runs", "--report-dir", "x")
    assert exited.value.code == 2 and "unrecognized arguments: --report-dir" in capsys.readouterr().err
    assert run_cli("runs", "--log-dir", "listing-logs") == 0
    assert "database: " in (tmp_path / "listing-logs" / "etl_pipeline.log").read_text()
    assert not (tmp_path / "reports").exists()
