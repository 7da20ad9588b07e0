"""Configuration and input problems a new user meets: one line, the documented exit code, no
traceback, no secret, and nothing created (no .pgdata/, logs/ or reports/) before the checks."""

import datetime as dt
from pathlib import Path

import pytest
from helpers import (
    APPOINTMENT_ROWS,
    APPOINTMENTS_HEADER,
    AS_OF,
    DOCTOR_ROWS,
    DOCTORS_HEADER,
    cli_subprocess,
    fetch,
)

SECRET = "Sup3rSecret"


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def created(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} & {".pgdata", "logs", "reports"}


def test_from_an_empty_folder_etl_exits_3_and_creates_nothing(tmp_path):
    result = cli_subprocess(["etl"], cwd=tmp_path, env={})
    assert result.returncode == 3
    assert one_line(result.stderr) == "healthtech-etl: error: doctors file not found: data/raw/doctors.xlsx"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content, message", [
    (b"DB_HOST=localhost\nDB_PASSWORD=caf\xe9\n", "healthtech-etl: error: .env is not UTF-8 text (byte 33): save it as UTF-8"),
    (None, "healthtech-etl: error: .env is not a regular file"),
])
def test_a_bad_dotenv_is_one_line(content, message, tmp_path, sample_inputs):
    if content is None:
        (tmp_path / ".env").mkdir()
    else:
        (tmp_path / ".env").write_bytes(content)
    result = cli_subprocess(["etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1])],
                            cwd=tmp_path, env={})
    assert result.returncode == 2
    assert one_line(result.stderr) == message
    assert created(tmp_path) == set()


@pytest.mark.parametrize("url, code, expected", [
    # An unencoded password holding "/": read as a password, masked, never used as a path.
    (f"postgresql://etl:Kq7z/{SECRET}@127.0.0.1:9/clinic?connect_timeout=3", 4,
     "cannot connect to PostgreSQL at etl@127.0.0.1:9/clinic (from DATABASE_URL)"),
    (f"postgresql://etl:{SECRET}@db:notaport/clinic", 2, "DATABASE_URL is not a valid URL"),
    (f"postgresql://etl:{SECRET}@db/clinic?connect_timeout=abc", 2, "DATABASE_URL connect_timeout must be a whole number"),
    (f"postgresql://etl:p@ss@{SECRET}@127.0.0.1:9/clinic?connect_timeout=3", 4, "cannot connect to PostgreSQL at etl@"),
])
def test_malformed_urls_never_show_the_password(url, code, expected, tmp_path, sample_inputs):
    result = cli_subprocess(["etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1]),
                             "--as-of", AS_OF], cwd=tmp_path, env={"DATABASE_URL": url})
    assert result.returncode == code
    assert expected in one_line(result.stderr)
    log = tmp_path / "logs" / "etl_pipeline.log"
    everything = result.stderr + result.stdout + (log.read_text() if log.exists() else "")
    # (letters no run id or timestamp can hold: the run id is hexadecimal)
    assert SECRET not in everything and "Kq7z" not in everything


def test_connection_failure_with_settings_from_dotenv_says_so(tmp_path, sample_inputs):
    (tmp_path / ".env").write_text(f"DB_HOST=127.0.0.1\nDB_PORT=9\nDB_USER=etl\nDB_PASSWORD={SECRET}\n")
    result = cli_subprocess(["etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1])],
                            cwd=tmp_path, env={})
    assert result.returncode == 4
    line = one_line(result.stderr)
    assert "(from DB_HOST/DB_PORT/DB_NAME/DB_USER in .env)" in line
    assert line.endswith("these settings came from .env: fix it, or remove it to use the embedded PostgreSQL")
    assert SECRET not in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["--horizon-days", "1e20"], "argument --horizon-days: invalid int value: '1e20'"),
    (["--horizon-days", str(10 ** 20)], f"the booking date horizon must be 0 to 3,652,058 days (any window past "
                                        f"9999-12-31 is the same window); got {10 ** 20}"),
    (["--keep-runs", "0"], "--keep-runs must be 1 or more"),
    (["--log-max-bytes", "lots"], "argument --log-max-bytes: invalid int value: 'lots'"),
])
def test_bad_numbers_are_one_line_exit_2(args, expected, tmp_path, sample_inputs, db_config):
    result = cli_subprocess(["etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1]),
                             "--as-of", AS_OF, *args], cwd=tmp_path, env={"DATABASE_URL": db_config.url()})
    assert result.returncode == 2
    assert expected in one_line(result.stderr)


def test_free_text_is_cut_in_the_log_and_on_the_console(run_cli, make_xlsx, tmp_path, capsys):
    phi = "Pending - call patient Jane Doe +1-555-0100 about her results"
    doctors = make_xlsx("d.xlsx", DOCTORS_HEADER, DOCTOR_ROWS[:3])
    appointments = make_xlsx("a.xlsx", APPOINTMENTS_HEADER, [
        (1, 5, 1, dt.datetime(2025, 10, 1), phi),
        (2, 5, 1, dt.datetime(2025, 10, 1), "x" * 30_000 + "\nFORGED LOG LINE"),
    ])
    assert run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
                   "-v") == 0
    captured = capsys.readouterr()
    log = (tmp_path / "logs" / "etl_pipeline.log").read_text()
    for text in (log, captured.out, captured.err):
        assert "about her results" not in text and "FORGED LOG LINE" not in text
        assert max(len(line) for line in text.splitlines()) < 400
    assert "'Pending - call patient Jane Doe +1-555-0...(61 chars)'=1" in captured.out


def test_a_sheet_without_header_is_not_echoed(run_cli, sample_inputs, make_xlsx, capsys):
    no_header = make_xlsx("a.xlsx", None, [(101, 34, 1, "10/21/2025", "Pending - call patient Jane Doe")])
    assert run_cli("etl", "--doctors", str(sample_inputs[0]), "--appointments", str(no_header)) == 3
    line = one_line(capsys.readouterr().err)
    # At most the first 40 characters of what was seen (issue 8), never the whole row.
    assert "is the header row missing?" in line and "Jane Doe" not in line


def test_rejections_keep_the_last_n_runs(run_cli, sample_inputs, db_config):
    args = ["etl", "--doctors", str(sample_inputs[0]), "--appointments", str(sample_inputs[1]), "--as-of", AS_OF,
            "--allow-older"]  # the same files loaded again on purpose
    for _ in range(3):
        assert run_cli(*args, "--keep-runs", "2") == 0
    runs = fetch(db_config, "SELECT run_id FROM healthtech.etl_runs ORDER BY started_at")
    assert len(runs) == 3  # the ledger keeps every run
    kept = fetch(db_config, "SELECT DISTINCT run_id FROM healthtech.etl_rejections ORDER BY run_id")
    assert sorted(row[0] for row in kept) == sorted(row[0] for row in runs[1:])
    per_run = len(APPOINTMENT_ROWS) - 7 + 2  # 9 appointments and 2 doctors rejected per run
    assert fetch(db_config, "SELECT count(*) FROM healthtech.etl_rejections") == [[2 * per_run]]
    # KEEP_RUNS from the environment.
    assert run_cli(*args, env={"KEEP_RUNS": "1"}) == 0
    assert fetch(db_config, "SELECT count(DISTINCT run_id) FROM healthtech.etl_rejections") == [[1]]


@pytest.mark.parametrize("args, code", [
    (["--horizon-days", str(10 ** 20)], 2),
    (["--keep-runs", "0"], 2),
    (["--report-dir", "inputs/doctors.xlsx"], 2),
    (["--doctors", "missing.xlsx"], 3),
])
def test_checks_come_before_the_embedded_server_and_any_folder(args, code, tmp_path, sample_inputs):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for source in sample_inputs:
        (inputs / source.name).write_bytes(source.read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    (work / "inputs").symlink_to(inputs)
    result = cli_subprocess(["etl", "--doctors", "inputs/doctors.xlsx", "--appointments", "inputs/appointments.xlsx",
                             *args], cwd=work, env={})  # no database settings: the embedded server would start
    assert result.returncode == code
    one_line(result.stderr)
    assert created(work) == set()
