"""Report and log directories that cannot be written: a file in the way, a read-only or full
file system (a tiny tmpfs when this machine lets us mount one). Before the load: exit 2, one
line, nothing loaded. After COMMIT: the run succeeded - a warning and exit 6, never a stale or
half-written report, no temporary file left."""

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AS_OF, fetch, snapshot

from healthtech_etl import pipeline


def one_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def etl_args(inputs, *extra: str) -> list[str]:
    return ["etl", "--doctors", str(inputs[0]), "--appointments", str(inputs[1]), "--as-of", AS_OF, *extra]


@pytest.fixture
def loaded(run_cli, sample_inputs, db_config):
    assert run_cli(*etl_args(sample_inputs)) == 0
    return snapshot(db_config)


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(directory: Path) -> None:
    """Fill the file system of ``directory`` completely (a real ENOSPC afterwards)."""
    with (directory / "filler").open("wb", buffering=0) as handle:  # unbuffered: close cannot fail
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)


def runs(db_config):
    return fetch(db_config, "SELECT status FROM healthtech.etl_runs ORDER BY started_at")


@pytest.mark.parametrize("flag", ["--report-dir", "--log-dir"])
@pytest.mark.parametrize("shape", ["file", "file_parent"])
def test_a_file_in_the_way_stops_before_anything(flag, shape, run_cli, loaded, sample_inputs, db_config, tmp_path,
                                                 capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    target = blocker if shape == "file" else blocker / "sub"
    capsys.readouterr()
    assert run_cli(*etl_args(sample_inputs, flag, str(target))) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"healthtech-etl: error: {flag} {target}")
    assert snapshot(db_config) == loaded and runs(db_config) == [["succeeded"]]


@pytest.mark.parametrize("flag", ["--report-dir", "--log-dir"])
@pytest.mark.parametrize("problem", ["read-only", "full"])
def test_read_only_or_full_file_system_stops_before_the_load(flag, problem, run_cli, loaded, sample_inputs,
                                                             db_config, tmp_path, capsys):
    with tmpfs(tmp_path / "mnt", "size=64k" + (",ro" if problem == "read-only" else "")) as mount:
        if problem == "full":
            fill(mount)
        capsys.readouterr()
        assert run_cli(*etl_args(sample_inputs, flag, str(mount / "out"))) == 2
        line = one_line(capsys.readouterr().err)
        reason = " is not writable" if problem == "read-only" else ": no space left on the device"
        assert line == f"healthtech-etl: error: {flag} {mount / 'out'}{reason}"
        assert not (mount / "out").exists()
    assert snapshot(db_config) == loaded and runs(db_config) == [["succeeded"]]


def test_disk_full_while_the_rejections_csv_is_written_rolls_the_load_back(run_cli, loaded, sample_inputs, db_config,
                                                                             tmp_path, monkeypatch, capsys):
    """The rejected rows' CSV is written beside the load; the load waits for it before COMMIT."""
    from healthtech_etl import csv_export

    with tmpfs(tmp_path / "mnt", "size=256k") as mount:
        real = csv_export.write_frame_csv

        def fill_then_write(path, frame):
            fill(mount)  # the disk fills up after quality_report.json, while the CSV is written
            return real(path, frame)

        monkeypatch.setattr(csv_export, "write_frame_csv", fill_then_write)
        capsys.readouterr()
        assert run_cli(*etl_args(sample_inputs, "--report-dir", str(mount / "reports"))) == 2
        line = one_line(capsys.readouterr().err)
        assert line == (f"healthtech-etl: error: cannot write the reports in {mount / 'reports'}: "
                        "No space left on device; nothing loaded")
        assert sorted(p.name for p in (mount / "reports").iterdir()) == ["quality_report.json"]  # no .tmp left
    assert snapshot(db_config) == loaded and runs(db_config) == [["succeeded"]]


def test_disk_full_after_the_commit_is_exit_6_and_no_stale_report(run_cli, loaded, sample_inputs, db_config,
                                                                    tmp_path, monkeypatch, capsys, make_xlsx):
    from helpers import APPOINTMENTS_HEADER, DOCTORS_HEADER

    new = (make_xlsx("d2.xlsx", DOCTORS_HEADER, [(50, "Dr. Solo", "Oncology")]),
           make_xlsx("a2.xlsx", APPOINTMENTS_HEADER, [(900, 1, 50, "2025-10-01", "confirmed")]))
    with tmpfs(tmp_path / "mnt", "size=256k") as mount:
        real_load_run = pipeline.load_run

        def load_then_fill(*args, **kwargs):
            real_load_run(*args, **kwargs)
            fill(mount)  # the disk fills up right after COMMIT

        monkeypatch.setattr(pipeline, "load_run", load_then_fill)
        capsys.readouterr()
        assert run_cli(*etl_args(new, "--report-dir", str(mount / "reports"))) == 6
        captured = capsys.readouterr()
        line = one_line(captured.err)
        run_id = fetch(db_config, "SELECT run_id FROM healthtech.etl_runs WHERE doctors_file = 'd2.xlsx'")[0][0]
        assert line == (f"healthtech-etl: warning: run {run_id} succeeded (data loaded and committed), but its report "
                        f"was not published: cannot write {mount / 'reports' / 'quality_report.json'}: "
                        "No space left on device")
        assert f"Run {run_id}" in captured.out  # the summary is still printed
        # The report written before the load said "not_loaded": it is gone rather than lying.
        assert sorted(p.name for p in (mount / "reports").iterdir()) == ["rejected_rows.csv"]
    assert runs(db_config) == [["succeeded"], ["succeeded"]]
    assert fetch(db_config, "SELECT id FROM healthtech.appointments") == [[900]]


def test_report_dir_replaced_by_a_file_after_the_commit(run_cli, loaded, sample_inputs, db_config, tmp_path,
                                                        monkeypatch, capsys):
    reports = tmp_path / "reports"
    real_load_run = pipeline.load_run

    def load_then_block(*args, **kwargs):
        real_load_run(*args, **kwargs)
        reports.rename(tmp_path / "moved-away")
        reports.write_text("a file where the report dir was")

    monkeypatch.setattr(pipeline, "load_run", load_then_block)
    capsys.readouterr()
    assert run_cli(*etl_args(sample_inputs, "--allow-older")) == 6
    line = one_line(capsys.readouterr().err)
    assert line.startswith("healthtech-etl: warning: run ") and "succeeded (data loaded and committed)" in line
    assert runs(db_config) == [["succeeded"], ["succeeded"]]
    assert not list(tmp_path.glob("**/*.tmp"))


def test_reports_are_written_atomically(run_cli, sample_inputs, tmp_path):
    assert run_cli(*etl_args(sample_inputs)) == 0
    names = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert names == ["quality_report.html", "quality_report.json", "rejected_rows.csv"]  # no .tmp left behind
    assert json.loads((tmp_path / "reports" / "quality_report.json").read_text())["load_status"] == "succeeded"


def test_unwritable_sample_out_dir_is_one_line(tmp_path):
    from helpers import cli_subprocess

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = cli_subprocess(["sample", "--out-dir", str(blocker / "raw")], cwd=tmp_path, env={})
    assert result.returncode == 2
    assert one_line(result.stderr) == f"healthtech-etl: error: --out-dir {blocker / 'raw'} cannot be created: " \
                                      f"{blocker} is a file"
