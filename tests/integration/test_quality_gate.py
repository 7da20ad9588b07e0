"""The gate sees empty loads: clean rows that are all rejected (here: every date after the
horizon) must not pass as "OK" and empty the tables."""

from helpers import APPOINTMENT_ROWS, APPOINTMENTS_HEADER, AS_OF, DOCTOR_ROWS, DOCTORS_HEADER, fetch, snapshot


def test_everything_out_of_range_trips_the_gate_and_keeps_the_data(run_cli, make_xlsx, db_config, capsys):
    doctors = make_xlsx("d.xlsx", DOCTORS_HEADER, DOCTOR_ROWS[:3])
    appointments = make_xlsx("a.xlsx", APPOINTMENTS_HEADER, APPOINTMENT_ROWS[:2])
    common = ["etl", "--doctors", str(doctors), "--appointments", str(appointments)]
    assert run_cli(*common, "--as-of", AS_OF, "--fail-on", "warning") == 0
    before = snapshot(db_config)
    assert len(before["appointments"]) == 2
    capsys.readouterr()

    assert run_cli(*common, "--as-of", "1950-01-01", "--fail-on", "warning") == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "data quality is critical and --fail-on=warning: acceptance_rate 0.00 % < 75 (critical): nothing loaded" \
        in err[0]
    assert snapshot(db_config) == before
    assert fetch(db_config, "SELECT status, count(*) FROM healthtech.etl_runs GROUP BY status ORDER BY status") == [
        ["gated", 1], ["succeeded", 1]]  # the gated run is on record, beside the one that loaded
