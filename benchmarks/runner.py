"""Running the lines: each run in a fresh process on freshly truncated tables, measured from
outside (wall time from process start to exit, peak RSS of the process tree), checked after."""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from checks import check_counts, reference_name, summarize, verify
from common import AS_OF, BENCH, CLI, CLI_LINES, LINES, MIB, PYTHON, ROOT, TIMEOUT
from database import export_clean_rows, prefill_previous_month, reset_tables, table_state, verify_merge
from inputs import Inputs

# The console script's entry, for an interpreter that has the package only on PYTHONPATH.
_ENTRY = "import sys; sys.argv[0] = 'healthtech-etl'; from healthtech_etl.cli import entry; entry()"


class Glue:
    """The Python 3.9 stand-in: an interpreter with Glue's library set and the --target
    directory holding the package and the shipped calamine wheel. ``missing``: why the line
    cannot run (None: ready)."""

    def __init__(self, python: Path, libs: Path) -> None:
        self.python, self.libs = python, libs
        self.missing = self._check()

    def _check(self) -> Optional[str]:
        how = ("scripts/test-compat.sh builds it before its tests (make test-compat; a short selection such as "
               "'bash scripts/test-compat.sh tests/aws/test_glue_wheel.py' will do), or point --glue-python and "
               "--glue-libs at another")
        if not self.python.exists():
            return f"no Python 3.9 stand-in at {self.python}: {how}"
        version = subprocess.run([str(self.python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True).stdout.strip()
        if version != "3.9":
            return f"{self.python} is Python {version or '?'}, not 3.9 (Glue Python shell)"
        for package in ("healthtech_etl", "python_calamine"):
            if not (self.libs / package).is_dir():
                return f"{self.libs} holds no {package} (pip install --no-index --target from dist/glue): {how}"
        sources = sorted((ROOT / "src" / "healthtech_etl").rglob("*.py"))
        stale = [path.relative_to(ROOT / "src").as_posix() for path in sources
                 if not _same_file(path, self.libs / path.relative_to(ROOT / "src"))]
        if stale:
            return (f"{self.libs} holds another healthtech_etl than src/ ({', '.join(stale[:4])}"
                    f"{' ...' if len(stale) > 4 else ''} differ): rebuild the wheel and reinstall it ({how})")
        return None


def _same_file(one: Path, other: Path) -> bool:
    return other.is_file() and one.read_bytes() == other.read_bytes()


def run_file(rows: int, inputs: Inputs, lines: list, repeat: Optional[int], config: Any, url: str,
             problems: list, seed: int, glue: Glue) -> dict:
    """Every line of ``lines`` that runs on this file, interleaved over the rounds; the
    summary, the cross-checks, the samples."""
    csv_dir = Path(tempfile.gettempdir()) / f"healthtech-bench-{os.getuid()}" / f"rows{rows}-{inputs.kind}"
    shutil.rmtree(csv_dir, ignore_errors=True)
    lines = [name for name in lines if inputs.kind in LINES[name].files]
    samples: dict = {name: [] for name in lines}
    states: dict = {}
    context = {"rows": rows, "inputs": inputs, "config": config, "url": url, "csv_dir": csv_dir, "seed": seed,
               "glue": glue, "problems": problems, "states": states}
    for round_index in range(max(repeat or LINES[name].repeats for name in lines)):
        due = [name for name in lines if round_index < (repeat or LINES[name].repeats)]
        # A line that COPYs the clean rows waits for the first loading line of the file.
        due.sort(key=lambda name: LINES[name].needs_clean_rows and not (csv_dir / "appointments.csv").exists())
        for name in due:
            if LINES[name].needs_clean_rows and not (csv_dir / "appointments.csv").exists():
                problems.append(f"{rows:,} rows, {inputs.kind}, {name}: not run, no line loaded the clean rows "
                                "it needs first")
                continue
            samples[name].append(run_one(name, context))
    shutil.rmtree(csv_dir, ignore_errors=True)
    verification = verify(f"{rows:,} rows, {inputs.kind}", states, problems)
    read_rows = next((s["read"] for name in ("project", "glue", "seed", "calamine-bare")
                      for s in samples.get(name, []) if s.get("read")), None)
    summary = {name: summarize(runs, read_rows) for name, runs in samples.items() if runs}
    return {"kind": inputs.kind, "appointment_rows_read": read_rows, "files": inputs.describe(), "lines": summary,
            "samples": samples, "verification": verification}


def run_one(name: str, context: dict) -> dict:
    """One run of ``name`` on freshly truncated tables, then its checks."""
    rows, inputs, config, csv_dir = context["rows"], context["inputs"], context["config"], context["csv_dir"]
    where = f"{rows:,} rows, {inputs.kind}, {name}"
    reset_tables(config)
    if name == "merge":  # untimed: the month before, already loaded
        prefill_previous_month(rows, context["seed"], inputs.doctors, config, context["url"], csv_dir)
    sample = run_line(name, inputs, context["url"], csv_dir, context["glue"])
    if sample["exit_code"] != 0:
        context["problems"].append(f"{where}: exit code {sample['exit_code']}: {sample['error']}")
    elif name == "merge":
        sample["tables"] = table_state(config)
        reference = context["states"].get(reference_name(context["states"]) or "")
        sample["merge_check"] = verify_merge(rows, config, csv_dir, sample, reference, context["problems"])
    elif LINES[name].loads:
        sample["tables"] = table_state(config)
        context["states"].setdefault(name, sample["tables"])
        fine = check_counts(where, sample, context["problems"])
        if fine and not (csv_dir / "appointments.csv").exists():
            export_clean_rows(config, csv_dir)
    stages = " ".join(f"{key} {value:.2f}" for key, value in sample.get("timings", {}).items()
                      if isinstance(value, (int, float)))
    print(f"  {inputs.kind:<6} {name:<14} {sample['wall']:8.2f} s  {sample['peak_rss'] / MIB:7.0f} MiB  {stages}",
          flush=True)
    return sample


def line_command(name: str, inputs: Inputs, work_dir: Path, csv_dir: Path, glue: Glue) -> tuple:
    """The command line and the PYTHONPATH of one run of ``name``."""
    common = ["--doctors", str(inputs.doctors), "--appointments", str(inputs.appointments), "--as-of", AS_OF]
    outputs = ["--report-dir", str(work_dir / "reports"), "--log-dir", str(work_dir / "logs")]
    if name == "project":
        return [CLI, "etl", *common, *outputs], str(ROOT / "src")
    if name == "merge":
        return [CLI, "etl", "--mode", "merge", *common, *outputs], str(ROOT / "src")
    if name == "glue":
        return [str(glue.python), "-c", _ENTRY, "etl", *common, *outputs], str(glue.libs)
    command = [PYTHON, str(BENCH / "lines.py"), name, *common, "--header-row", str(inputs.header_row)]
    return command + (["--csv-dir", str(csv_dir)] if name == "limit" else []), str(ROOT / "src")


def run_line(name: str, inputs: Inputs, url: str, csv_dir: Path, glue: Glue) -> dict:
    """One run of one line in a fresh process: wall time, peak RSS, the line's own timings."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
        work_dir = Path(work)
        command, python_path = line_command(name, inputs, work_dir, csv_dir, glue)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "PG"))}
        env.update(DATABASE_URL=url, PYTHONPATH=python_path)
        stdout_path, stderr_path = work_dir / "stdout.txt", work_dir / "stderr.txt"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            clock = time.perf_counter()
            process = subprocess.Popen(command, cwd=work_dir, env=env, stdout=stdout, stderr=stderr)
            killer = threading.Timer(TIMEOUT, process.kill)
            killer.start()
            tree = TreeMemory(process.pid)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - clock
            killer.cancel()
            tree.stop()
            process.returncode = os.waitstatus_to_exitcode(status)
        # wait4's peak is the largest single process's; a run that forks helpers holds more at
        # once: the sampled sum over its processes.
        sample: dict = {"wall": round(wall, 3), "peak_rss": max(usage.ru_maxrss * 1024, tree.peak),
                        "peak_rss_single": usage.ru_maxrss * 1024, "peak_rss_tree": tree.peak,
                        "exit_code": process.returncode, "cpu": round(usage.ru_utime + usage.ru_stime, 3)}
        output = stdout_path.read_text(errors="replace")
        if process.returncode != 0:
            sample["error"] = (stderr_path.read_text(errors="replace").strip() or output.strip())[-800:]
            return sample
        if name in CLI_LINES:
            read_report(sample, work_dir / "reports" / "quality_report.json")
        else:
            data = json.loads(output.strip().splitlines()[-1])
            sample["timings"] = {key: round(value, 3) for key, value in data["timings"].items()}
            sample.update({key: data[key] for key in ("read", "loaded", "driver") if key in data})
        return sample


def read_report(sample: dict, path: Path) -> None:
    """A CLI run's own figures, from its quality report: stage times, rows read, counts."""
    report = json.loads(path.read_text())
    sample["timings"] = report.get("timings_seconds", {})
    sample["read"] = report["counts"]["appointments"]["read"]
    sample["report_counts"] = {entity: report["counts"][entity] for entity in ("doctors", "appointments")}
    if "merge" in report:
        sample["merge"] = {key: report["merge"][key] for key in ("doctors", "appointments", "history")}


class TreeMemory(threading.Thread):
    """The peak of the summed resident memory of a process and its descendants, sampled every
    25 ms (Linux /proc; elsewhere 0). Pages shared after a fork count once per process: an
    upper bound."""

    PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self._stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._stopped.wait(0.025):
            self.peak = max(self.peak, self._sample())

    def stop(self) -> None:
        self._stopped.set()
        self.join()

    def _sample(self) -> int:
        total, pending = 0, [self.pid]
        while pending:
            pid = pending.pop()
            try:
                with open(f"/proc/{pid}/statm") as handle:
                    total += int(handle.read().split()[1]) * self.PAGE
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as handle:
                        pending.extend(int(child) for child in handle.read().split())
            except (OSError, ValueError):  # gone meanwhile, or no /proc
                continue
        return total
