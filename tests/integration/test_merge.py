"""--mode merge on the real PostgreSQL: monthly exports that add up, appointment history,
idempotent re-runs, all-or-nothing failures, serialised concurrent runs, mixing with replace."""

import datetime as dt
import json

import pytest
from helpers import (
    APPOINTMENTS_HEADER,
    AS_OF,
    DOCTORS_HEADER,
    SCHEMA_SQL,
    cli_subprocess,
    fetch,
    snapshot,
    waits_for_the_load_lock,
)

from healthtech_etl.db import connect
from healthtech_etl.load import ADVISORY_LOCK_KEY
from healthtech_etl.queries import run_queries

OCTOBER_DOCTORS = [(1, "Dr. Ana García", "cardiology"), (2, "Dr. Zoë Okafor", "Pediatrics")]
OCTOBER = [
    (201, 34, 1, dt.datetime(2025, 10, 6, 9, 0), "confirmed"),
    (202, 35, 2, dt.datetime(2025, 10, 7, 10, 0), "confirmed"),
    (203, 36, 1, dt.datetime(2025, 10, 8, 11, 0), "cancelled"),
    (204, 37, 2, dt.datetime(2025, 10, 30, 12, 0), "confirmed"),  # moved to November 3rd in November's export
    (205, 38, 1, dt.datetime(2025, 10, 31, 13, 0), "confirmed"),  # cancelled in November's export
]
# Doctor 1 is absent from November's export (kept), doctor 2 renamed, doctor 3 new.
NOVEMBER_DOCTORS = [(2, "Dr. Zoë Okafor-Lee", "Pediatrics"), (3, "Dr. Luca Rossi", None)]
NOVEMBER = [
    (204, 37, 2, dt.datetime(2025, 11, 3, 12, 0), "confirmed"),
    (205, 38, 1, dt.datetime(2025, 10, 31, 13, 0), "Cancelled"),  # doctor 1: loaded in October
    (206, 39, 3, dt.datetime(2025, 11, 4, 9, 0), "confirmed"),
    (207, 40, 1, dt.datetime(2025, 11, 5, 9, 0), "confirmed"),  # doctor 1: loaded in October
    (208, 41, 99, dt.datetime(2025, 11, 5, 9, 0), "confirmed"),  # unknown_doctor: in neither
]
BOTH_MONTHS = [
    [201, 34, 1, dt.datetime(2025, 10, 6, 9, 0), "confirmed"],
    [202, 35, 2, dt.datetime(2025, 10, 7, 10, 0), "confirmed"],
    [203, 36, 1, dt.datetime(2025, 10, 8, 11, 0), "cancelled"],
    [204, 37, 2, dt.datetime(2025, 11, 3, 12, 0), "confirmed"],
    [205, 38, 1, dt.datetime(2025, 10, 31, 13, 0), "cancelled"],
    [206, 39, 3, dt.datetime(2025, 11, 4, 9, 0), "confirmed"],
    [207, 40, 1, dt.datetime(2025, 11, 5, 9, 0), "confirmed"],
]
DOCTORS_AFTER_NOVEMBER = [[1, "Dr. Ana García", "Cardiology"], [2, "Dr. Zoë Okafor-Lee", "Pediatrics"],
                          [3, "Dr. Luca Rossi", None]]
HISTORY = ("SELECT booking_id, patient_id, doctor_id, booking_date, status, valid_from, valid_to, run_id "
           "FROM healthtech.appointment_history ORDER BY booking_id, valid_from")


@pytest.fixture
def months(make_xlsx):
    return {
        "october": (make_xlsx("d10.xlsx", DOCTORS_HEADER, OCTOBER_DOCTORS),
                    make_xlsx("a10.xlsx", APPOINTMENTS_HEADER, OCTOBER)),
        "november": (make_xlsx("d11.xlsx", DOCTORS_HEADER, NOVEMBER_DOCTORS),
                     make_xlsx("a11.xlsx", APPOINTMENTS_HEADER, NOVEMBER)),
    }


def etl_args(files, *extra):
    doctors, appointments = files
    return ["etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF, *extra]


def report_of(tmp_path):
    return json.loads((tmp_path / "reports" / "quality_report.json").read_text())


def runs(db_config):
    """etl_runs in load order: run_id, mode, status, finished_at, the merge's load time."""
    return fetch(db_config, "SELECT run_id, mode, status, finished_at, counts->'merge'->>'loaded_at' "
                            "FROM healthtech.etl_runs ORDER BY started_at")


def full_state(db_config):
    return {**snapshot(db_config), "history": fetch(db_config, HISTORY),
            "row_versions": fetch(db_config, "SELECT 'a', id, xmin::text FROM healthtech.appointments UNION ALL "
                                             "SELECT 'd', id, xmin::text FROM healthtech.doctors ORDER BY 1, 2")}


def assert_history_matches_tables(db_config):
    """Every appointment has exactly one open version, equal to its current row; the versions of
    a booking never overlap (a gap: the booking was absent from the table, after a replace)."""
    assert fetch(db_config, """
        SELECT count(*) FROM healthtech.appointments a
        FULL JOIN (SELECT * FROM healthtech.appointment_history WHERE valid_to IS NULL) h
               ON h.source = a.source AND h.booking_id = a.id
        WHERE (a.source, a.id, a.patient_id, a.doctor_id, a.booking_date, a.status)
              IS DISTINCT FROM (h.source, h.booking_id, h.patient_id, h.doctor_id, h.booking_date, h.status)""") == [[0]]
    assert fetch(db_config, """
        SELECT count(*) FROM (SELECT valid_to, lead(valid_from) OVER (PARTITION BY source, booking_id
                                                                      ORDER BY valid_from)
                              AS next_from FROM healthtech.appointment_history) v
        WHERE v.next_from IS NOT NULL AND (v.valid_to IS NULL OR v.valid_to > v.next_from)""") == [[0]]


def test_october_then_november_keeps_both_months_and_the_changes(run_cli, months, db_config, tmp_path):
    assert run_cli(*etl_args(months["october"], "--mode", "merge")) == 0
    october = report_of(tmp_path)
    assert october["mode"] == "merge" and october["settings"]["mode"] == "merge"
    assert october["merge"]["appointments"] == {"inserted": 5, "updated": 0, "unchanged": 0}
    assert october["merge"]["history_sync"] == {"as_of_run": october["run_id"], "closed": 0, "opened": 0}

    assert run_cli(*etl_args(months["november"], "--mode", "merge")) == 0
    november = report_of(tmp_path)

    assert fetch(db_config, "SELECT id, name, specialty FROM healthtech.doctors ORDER BY id") == DOCTORS_AFTER_NOVEMBER
    assert fetch(db_config, "SELECT id, patient_id, doctor_id, booking_date, status FROM healthtech.appointments "
                            "ORDER BY id") == BOTH_MONTHS
    assert november["merge"]["doctors"] == {"inserted": 1, "updated": 1, "unchanged": 0}
    assert november["merge"]["appointments"] == {"inserted": 2, "updated": 2, "unchanged": 0}
    assert november["merge"]["history"] == {"closed": 2, "opened": 4}
    assert november["merge"]["history_sync"] is None  # the last load was a merge: history in line
    # Doctor 1 is not in November's file but was loaded in October: 205 and 207 are valid.
    integrity = november["metrics"]["referential_integrity"]
    assert (integrity["value"], integrity["basis"]) == (80.0, "doctors_in_file_and_database")
    assert integrity["known_doctors"] == {"in_file": 2, "in_database": 2, "total": 3}
    assert november["rejections"] == {"unknown_doctor": 1}

    (oct_run, oct_mode, _, _, oct_at), (nov_run, nov_mode, _, _, nov_at) = runs(db_config)
    assert (oct_mode, nov_mode) == ("merge", "merge")
    oct_at, nov_at = dt.datetime.fromisoformat(oct_at), dt.datetime.fromisoformat(nov_at)
    expected = []
    for booking, patient, doctor, when, status in BOTH_MONTHS:
        if booking in (204, 205):
            old = list(OCTOBER[booking - 201])
            expected.append([*old[:4], old[4].lower(), oct_at, nov_at, oct_run])
            expected.append([booking, patient, doctor, when, status, nov_at, None, nov_run])
        else:
            expected.append([booking, patient, doctor, when, status, oct_at if booking < 206 else nov_at, None,
                             oct_run if booking < 206 else nov_run])
    assert fetch(db_config, HISTORY) == expected
    assert_history_matches_tables(db_config)

    results = {result.name: result for result in run_queries(db_config)}
    changes = results["6_status_changes"]
    assert changes.columns == ["source", "booking_id", "patient_id", "status_before", "status_after", "changed_at",
                               "run_id"]
    assert changes.rows == [["default", 205, 38, "confirmed", "cancelled", nov_at, nov_run]]


def test_re_running_the_same_files_changes_nothing(run_cli, months, db_config, tmp_path, capsys):
    for month in ("october", "november"):
        assert run_cli(*etl_args(months[month], "--mode", "merge")) == 0
    before = full_state(db_config)
    november_run = runs(db_config)[-1][0]
    capsys.readouterr()

    # The same bytes again: a no-op, not even a ledger row.
    assert run_cli(*etl_args(months["november"], "--mode", "merge")) == 0
    assert capsys.readouterr().out.strip() == (f"already loaded by run {november_run} (source default): "
                                               "nothing written (--allow-older loads it again)")
    assert full_state(db_config) == before
    assert report_of(tmp_path)["load_status"] == "skipped"

    # Forced (--allow-older): merged again, changing nothing.
    assert run_cli(*etl_args(months["november"], "--mode", "merge", "--allow-older")) == 0

    # Same rows, same history, and not even rewritten (same row versions); only the new run's
    # ledger row and its rejected row are added.
    after = full_state(db_config)
    assert after["rejections"] == [[before["rejections"][0][0] + 1]]
    assert {**after, "rejections": None} == {**before, "rejections": None}
    report = report_of(tmp_path)
    assert report["merge"]["doctors"] == {"inserted": 0, "updated": 0, "unchanged": 2}
    assert report["merge"]["appointments"] == {"inserted": 0, "updated": 0, "unchanged": 4}
    assert report["merge"]["history"] == {"closed": 0, "opened": 0}
    assert [row[1:3] for row in runs(db_config)] == [["merge", "succeeded"]] * 3


def test_mode_from_the_environment_and_bad_modes(run_cli, months, db_config, capsys):
    assert run_cli(*etl_args(months["october"]), env={"LOAD_MODE": "merge"}) == 0
    assert run_cli(*etl_args(months["november"]), env={"LOAD_MODE": "merge"}) == 0
    assert len(fetch(db_config, "SELECT 1 FROM healthtech.appointments")) == 7
    before = full_state(db_config)
    capsys.readouterr()
    assert run_cli(*etl_args(months["october"]), env={"LOAD_MODE": "upsert"}) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["healthtech-etl: error: the load mode must be one of replace, merge (got 'upsert')"]
    assert full_state(db_config) == before and len(runs(db_config)) == 2


@pytest.mark.parametrize("where", ["history_insert", "appointment_update", "doctor_insert"])
def test_failure_mid_merge_rolls_everything_back(where, run_cli, months, db_config, capsys):
    assert run_cli(*etl_args(months["october"], "--mode", "merge")) == 0
    before = full_state(db_config)
    table, event, condition = {
        "history_insert": ("appointment_history", "INSERT", "NEW.booking_id = 206"),
        "appointment_update": ("appointments", "UPDATE", "NEW.id = 205"),
        "doctor_insert": ("doctors", "INSERT", "NEW.id = 3"),
    }[where]
    connection = connect(db_config)
    connection.run(f"""
        CREATE FUNCTION healthtech.boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF {condition} THEN RAISE EXCEPTION 'injected failure'; END IF;
            RETURN NEW;
        END $$""")
    connection.run(f"CREATE TRIGGER boom BEFORE {event} ON healthtech.{table} "
                   "FOR EACH ROW EXECUTE FUNCTION healthtech.boom()")
    connection.close()
    capsys.readouterr()

    assert run_cli(*etl_args(months["november"], "--mode", "merge")) == 4

    err = capsys.readouterr().err
    assert "rolled back" in err and "injected failure" in err
    assert full_state(db_config) == before  # tables, rejections and history as they were
    assert [row[1:3] for row in runs(db_config)] == [["merge", "succeeded"], ["merge", "failed"]]


def test_merge_after_replace_starts_history_from_the_replaced_contents(run_cli, months, db_config, tmp_path):
    assert run_cli(*etl_args(months["october"])) == 0  # replace: no history
    assert fetch(db_config, "SELECT count(*) FROM healthtech.appointment_history") == [[0]]

    assert run_cli(*etl_args(months["november"], "--mode", "merge")) == 0

    (replace_run, _, _, replaced_at, _), (merge_run, mode, _, _, merged_at) = runs(db_config)
    merged_at = dt.datetime.fromisoformat(merged_at)
    assert mode == "merge"
    assert report_of(tmp_path)["merge"]["history_sync"] == {"as_of_run": replace_run, "closed": 0, "opened": 5}
    history = fetch(db_config, HISTORY)
    # October's rows enter the history as of the replace that loaded them.
    assert [row[0] for row in history] == [201, 202, 203, 204, 204, 205, 205, 206, 207]
    assert {(row[5], row[7]) for row in history if row[0] < 206 and row[6] is not None} == {(replaced_at, replace_run)}
    assert [row[6] for row in history if row[0] in (204, 205)] == [merged_at, None, merged_at, None]
    assert {row[7] for row in history if row[6] is None and row[0] in (204, 205, 206, 207)} == {merge_run}
    assert fetch(db_config, "SELECT id FROM healthtech.appointments ORDER BY id") == [[row[0]] for row in BOTH_MONTHS]
    assert_history_matches_tables(db_config)


def test_replace_after_merge_writes_no_history_and_the_next_merge_records_it(run_cli, months, db_config, tmp_path):
    assert run_cli(*etl_args(months["october"], "--mode", "merge")) == 0
    october_history = fetch(db_config, HISTORY)

    # Replace with November: the tables hold November only (doctor 1 gone: 205, 207 rejected).
    assert run_cli(*etl_args(months["november"])) == 0
    assert fetch(db_config, "SELECT id FROM healthtech.appointments ORDER BY id") == [[204], [206]]
    assert report_of(tmp_path)["metrics"]["referential_integrity"]["basis"] == "doctors_in_file"
    assert "merge" not in report_of(tmp_path)
    assert fetch(db_config, HISTORY) == october_history

    # The next merge first records what the replace did, as of the replace (the same bytes as the
    # first run: loaded again only with --allow-older).
    assert run_cli(*etl_args(months["october"], "--mode", "merge", "--allow-older")) == 0
    (first, _, _, _, _), (replace_run, replace_mode, _, replaced_at, _), (last, _, _, _, merged_at) = runs(db_config)
    merged_at = dt.datetime.fromisoformat(merged_at)
    assert replace_mode == "replace"
    report = report_of(tmp_path)
    # Closed: 201-205's October versions (203 and 205 were gone, 204 moved); opened: 204 and 206.
    assert report["merge"]["history_sync"] == {"as_of_run": replace_run, "closed": 5, "opened": 2}
    assert report["merge"]["appointments"] == {"inserted": 4, "updated": 1, "unchanged": 0}
    history = fetch(db_config, HISTORY)
    versions = {(row[0], row[7]): (row[5], row[6]) for row in history}
    assert versions[(204, replace_run)] == (replaced_at, merged_at)
    assert versions[(206, replace_run)] == (replaced_at, None)
    assert versions[(201, first)][1] == replaced_at and versions[(201, last)] == (merged_at, None)
    assert len(history) == 12
    assert_history_matches_tables(db_config)
    changes = {result.name: result for result in run_queries(db_config)}["6_status_changes"].rows
    assert changes == []  # 201-205 came back with their October statuses; no version changed status


def test_concurrent_merges_serialise(months, make_xlsx, db_config, tmp_path):
    first = (make_xlsx("d1.xlsx", DOCTORS_HEADER, [(10, "Dr. One", "X")]),
             make_xlsx("a1.xlsx", APPOINTMENTS_HEADER, [(301, 1, 10, "2025-10-01", "confirmed"),
                                                        (302, 2, 10, "2025-10-02", "confirmed")]))
    second = (make_xlsx("d2.xlsx", DOCTORS_HEADER, [(11, "Dr. Two", "Y")]),
              make_xlsx("a2.xlsx", APPOINTMENTS_HEADER, [(302, 2, 11, "2025-10-03", "cancelled"),
                                                         (303, 3, 11, "2025-10-04", "confirmed")]))
    env = {"DATABASE_URL": db_config.url(), "LOAD_MODE": "merge"}
    processes = [cli_subprocess(etl_args(files), cwd=tmp_path, env=env, wait=False) for files in (first, second)]
    results = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], results

    loaded = runs(db_config)
    assert [row[1:3] for row in loaded] == [["merge", "succeeded"]] * 2
    last_run = max(loaded, key=lambda row: row[4])[0]
    rows = {row[0]: row for row in fetch(db_config, "SELECT id, doctor_id, status FROM healthtech.appointments")}
    assert sorted(rows) == [301, 302, 303]
    # 302 holds the values of whichever run loaded last, and its history says so.
    last_file = fetch(db_config, "SELECT doctors_file FROM healthtech.etl_runs WHERE run_id = :r", r=last_run)
    assert rows[302][1:] == ([11, "cancelled"] if last_file == [["d2.xlsx"]] else [10, "confirmed"])
    versions = fetch(db_config, "SELECT run_id, valid_to IS NULL FROM healthtech.appointment_history "
                                "WHERE booking_id = 302 ORDER BY valid_from")
    assert len(versions) == 2 and versions[-1] == [last_run, True]
    assert_history_matches_tables(db_config)


def test_a_merge_waits_for_the_load_lock(months, db_config, tmp_path, run_cli):
    assert run_cli(*etl_args(months["october"], "--mode", "merge")) == 0
    before = full_state(db_config)
    holder = connect(db_config)
    holder.run("START TRANSACTION")
    holder.run("SELECT pg_advisory_xact_lock(:key)", key=ADVISORY_LOCK_KEY)
    process = cli_subprocess(etl_args(months["november"], "--mode", "merge"), cwd=tmp_path,
                             env={"DATABASE_URL": db_config.url()}, wait=False)
    try:
        assert waits_for_the_load_lock(db_config, process), "the merge did not wait for the lock"
        assert full_state(db_config) == before
    finally:
        holder.run("COMMIT")
        holder.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert fetch(db_config, "SELECT id, patient_id, doctor_id, booking_date, status FROM healthtech.appointments "
                            "ORDER BY id") == BOTH_MONTHS




@pytest.mark.parametrize("rebuild_from", [0, 10**9])
def test_large_merge_index_rebuild_keeps_schema_rows_and_history(rebuild_from, run_cli, months, db_config,
                                                                 monkeypatch):
    assert run_cli(*etl_args(months["october"])) == 0  # replace: the schema as created
    schema = fetch(db_config, SCHEMA_SQL)
    assert any("FOREIGN KEY" in definition for _, definition in schema)
    monkeypatch.setattr("healthtech_etl.bulk.REBUILD_MIN_ROWS", rebuild_from)  # 0: the bulk path
    assert run_cli(*etl_args(months["november"], "--mode", "merge")) == 0
    assert fetch(db_config, SCHEMA_SQL) == schema
    assert fetch(db_config, "SELECT id, patient_id, doctor_id, booking_date, status FROM healthtech.appointments "
                            "ORDER BY id") == BOTH_MONTHS
    assert_history_matches_tables(db_config)


@pytest.mark.parametrize("rebuild_from", [0, 10**9])
def test_an_appointment_of_a_doctor_gone_at_load_time_is_rejected_and_the_rest_loads(rebuild_from, run_cli, months,
                                                                                     db_config, monkeypatch):
    """Referential integrity is judged again under the load lock (e.g. a replace removed a doctor
    between the read of the loaded doctors and the load): that row becomes an unknown_doctor
    rejection, the rest loads - with or without the index rebuild."""
    import pandas as pd

    from healthtech_etl.load import RunRecord, load_run

    assert run_cli(*etl_args(months["october"], "--mode", "merge")) == 0
    schema = fetch(db_config, SCHEMA_SQL)
    monkeypatch.setattr("healthtech_etl.bulk.REBUILD_MIN_ROWS", rebuild_from)
    counts = {"appointments": {"read": 2, "loaded": 2, "rejected": 0}}
    run = RunRecord(run_id="orphan", started_at=dt.datetime.now(dt.timezone.utc), doctors_file="d",
                    doctors_sha256="0", appointments_file="a", appointments_sha256="0", counts=counts,
                    metrics={"referential_integrity": {"value": 100.0}}, mode="merge")
    doctors = pd.DataFrame({"id": [1], "name": ["Dr. Ana García"], "specialty": ["Cardiology"], "source_row": [2]})
    orphan = pd.DataFrame({"id": [201, 209], "patient_id": [34, 6], "doctor_id": [1, 777],
                           "booking_date": pd.to_datetime(["2025-10-06 09:00", "2025-10-02 00:00"]),
                           "status": ["cancelled", "cancelled"], "source_row": [2, 3]})
    load_run(db_config, run, doctors, orphan, {}, {"doctors": "d", "appointments": "a"})
    assert fetch(db_config, "SELECT status FROM healthtech.appointments WHERE id IN (201, 209)") == [["cancelled"]]
    assert fetch(db_config, "SELECT row_number, record_id, reasons, raw ->> 'doctor_id', source "
                            "FROM healthtech.etl_rejections WHERE run_id = 'orphan'") == [
        [3, 209, ["unknown_doctor"], "777", "default"]]
    ledger = fetch(db_config, "SELECT status, counts -> 'appointments', metrics -> 'referential_integrity' "
                              "FROM healthtech.etl_runs WHERE run_id = 'orphan'")
    assert ledger == [["succeeded", {"read": 2, "loaded": 1, "rejected": 1, "rejected_after_lock": 1},
                       {"value": 100.0, "rejected_after_lock": 1}]]
    assert fetch(db_config, SCHEMA_SQL) == schema
    assert_history_matches_tables(db_config)
