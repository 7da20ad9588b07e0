"""Business questions on a dataset whose answers are known (see helpers.APPOINTMENT_ROWS)."""

import csv
import datetime as dt
import decimal

from helpers import AS_OF, cli_subprocess

from healthtech_etl.queries import format_table, list_queries, run_queries


def load(run_cli, sample_inputs):
    doctors, appointments = sample_inputs
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF) == 0


def test_every_business_question(run_cli, sample_inputs, db_config, tmp_path):
    load(run_cli, sample_inputs)
    results = {r.name: r for r in run_queries(db_config, out_dir=tmp_path / "out")}
    assert sorted(results) == [p.stem for p in list_queries()] == [
        "1_most_confirmed_doctor", "2_patient_34_confirmed", "3_cancelled_oct_21_24", "4_confirmed_per_doctor",
        "5_confirmation_ratio_by_specialty", "6_status_changes",
    ]
    # Per source (one here: default) and over all sources.
    assert results["1_most_confirmed_doctor"].rows == [["(all)", "default", 1, "Dr. Ana García", "Cardiology", 2],
                                                       ["default", "default", 1, "Dr. Ana García", "Cardiology", 2]]
    assert results["2_patient_34_confirmed"].rows == [["default", 34, 2], ["(all)", 34, 2]]
    # 103 (10-23), 104 (serial, 10-24 00:00) and 105 (10-24 23:59) - not 107 (10-20)
    assert results["3_cancelled_oct_21_24"].rows == [["default", 3], ["(all)", 3]]
    assert results["4_confirmed_per_doctor"].rows == [
        ["default", 1, "Dr. Ana García", "Cardiology", 2], ["default", 2, "Dr. Zoë Okafor", "Pediatrics", 0],
        ["default", 3, "Dr. Luca Rossi", None, 0],
    ]
    ratios = [["Cardiology", 3, 2, decimal.Decimal("66.67")], ["(none)", 1, 0, decimal.Decimal("0.00")],
              ["Pediatrics", 3, 0, decimal.Decimal("0.00")]]
    assert results["5_confirmation_ratio_by_specialty"].rows == [["default", *row] for row in ratios] + [
        ["(all)", *row] for row in ratios]
    assert results["6_status_changes"].rows == []  # replace mode keeps no history
    with (tmp_path / "out" / "4_confirmed_per_doctor.csv").open(encoding="utf-8") as handle:
        assert list(csv.reader(handle))[1:] == [["default", "1", "Dr. Ana García", "Cardiology", "2"],
                                                ["default", "2", "Dr. Zoë Okafor", "Pediatrics", "0"],
                                                ["default", "3", "Dr. Luca Rossi", "", "0"]]


def test_window_edges_are_whole_days(run_cli, make_xlsx, db_config):
    from helpers import APPOINTMENTS_HEADER, DOCTORS_HEADER

    doctors = make_xlsx("d.xlsx", DOCTORS_HEADER, [(1, "Dr. A", "X")])
    edges = [dt.datetime(2025, 10, 20, 23, 59, 59), dt.datetime(2025, 10, 21), dt.datetime(2025, 10, 24, 23, 59, 59),
             dt.datetime(2025, 10, 25)]
    appointments = make_xlsx("a.xlsx", APPOINTMENTS_HEADER,
                             [(i + 1, 5, 1, moment, "cancelled") for i, moment in enumerate(edges)])
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF) == 0
    results = {r.name: r for r in run_queries(db_config)}
    assert results["3_cancelled_oct_21_24"].rows == [["default", 2], ["(all)", 2]]
    assert results["1_most_confirmed_doctor"].rows == []  # nobody has a confirmed appointment


def test_formula_like_values_are_escaped_in_query_csv(run_cli, make_xlsx, db_config, tmp_path):
    from helpers import APPOINTMENTS_HEADER, DOCTORS_HEADER

    # (openpyxl would store a text starting with "=" as a formula, so "-" and "@" stand in here)
    doctors = make_xlsx("d.xlsx", DOCTORS_HEADER, [(1, "-2+3+cmd|' /C calc'!A0", "@cmd")])
    appointments = make_xlsx("a.xlsx", APPOINTMENTS_HEADER, [(1, 5, 1, "2025-10-01", "confirmed")])
    assert run_cli("run", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF) == 0
    with (tmp_path / "reports" / "1_most_confirmed_doctor.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["(all)", "default", "1", "'-2+3+cmd|' /C calc'!A0", "'@Cmd", "1"]


def test_format_table_aligns_columns():
    text = format_table(["name", "n"], [["Dr. A", 1], ["Dr. Longer", 100]])
    lines = text.splitlines()
    assert lines[0] == "name          n"
    assert lines[2] == "Dr. A         1"
    assert lines[3] == "Dr. Longer  100"
    assert "(no rows)" in format_table(["x"], [])


def test_run_without_any_database_settings_uses_embedded_postgres(tmp_path):
    """What `make run` does on a fresh machine: sample data, embedded PostgreSQL in .pgdata/."""
    sample = cli_subprocess(["sample", "--rows", "300", "--out-dir", "data/raw"], cwd=tmp_path, env={})
    assert sample.returncode == 0, sample.stderr
    try:
        result = cli_subprocess(["run", "--as-of", AS_OF], cwd=tmp_path, env={}, timeout=180)
    finally:  # the server outlives the run (until idle or 'db stop')
        stopped = cli_subprocess(["db", "stop", "--force"], cwd=tmp_path, env={})
    assert stopped.returncode == 0, stopped.stderr
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".pgdata" / "PG_VERSION").exists()
    assert "== 2_patient_34_confirmed ==" in result.stdout
    assert "data quality" in result.stdout
    assert sorted(p.name for p in (tmp_path / "reports").glob("*.csv")) == [
        "1_most_confirmed_doctor.csv", "2_patient_34_confirmed.csv", "3_cancelled_oct_21_24.csv",
        "4_confirmed_per_doctor.csv", "5_confirmation_ratio_by_specialty.csv", "6_status_changes.csv",
        "rejected_rows.csv"]
