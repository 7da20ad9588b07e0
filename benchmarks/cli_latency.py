"""How long a command takes as a user sees it (process start to exit), with the embedded PostgreSQL
warm (left running by the previous command) and cold (stopped, or not even created):

    .venv/bin/python benchmarks/cli_latency.py [--repeat 5]

Its own data dir (a temporary folder, stopped and removed at the end) and a 1,000-row sample
workbook; prints a table and writes benchmarks/results/cli_latency.md and .json. Also: the import
time of ``runs`` by top-level package (python -X importtime), the first suspect of a slow start."""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CLI = str(Path(sys.executable).with_name("healthtech-etl"))
AS_OF = "2025-11-01"
TARGETS = {"runs": 0.5, "etl (1k rows)": 1.5}  # warm, seconds (issue 19)


def timed(args: list, cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return elapsed


def import_seconds(cwd: Path, env: dict) -> dict:
    """Import time of ``runs`` per top-level package (its modules' own times), in seconds (the five largest)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "healthtech_etl.cli", "runs"], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=600)
    totals: Counter = Counter()
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
        if match:
            totals[match.group(2).split(".")[0]] += int(match.group(1)) / 1e6
    return dict(totals.most_common(5))


def measure(repeat: int, work: Path) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "DB_HOST", "EMBEDDED_IDLE_MINUTES")}
    env.update(PGDATA_DIR=str(work / "pgdata"), XDG_RUNTIME_DIR=env.get("XDG_RUNTIME_DIR", "/tmp"))
    # --allow-older: each repeat loads the same files again (else every repeat after the first is a no-op).
    etl = ["etl", "--doctors", "data/doctors.xlsx", "--appointments", "data/appointments.xlsx", "--as-of", AS_OF,
           "--quiet", "--allow-older"]
    timed(["sample", "--rows", "1000", "--out-dir", "data", "--quiet"], work, env)
    rows: dict = {}

    def record(name: str, state: str, seconds: list) -> None:
        rows[f"{name}|{state}"] = {"command": name, "server": state, "median_s": round(statistics.median(seconds), 3),
                                   "min_s": round(min(seconds), 3), "runs": len(seconds)}

    record("etl (1k rows)", "not created (initdb)", [timed(etl, work, env)])
    for name, args in (("runs", ["runs"]), ("etl (1k rows)", etl), ("report", ["report"]),
                       ("db status", ["db", "status"])):
        cold = []
        for _ in range(repeat):
            timed(["db", "stop"], work, env)
            cold.append(timed(args, work, env))
        record(name, "stopped", cold)
        record(name, "running", [timed(args, work, env) for _ in range(repeat)])
    imports = import_seconds(work, env)
    timed(["db", "stop"], work, env)
    return {"rows": list(rows.values()), "imports_of_runs_s": {key: round(value, 3) for key, value in imports.items()}}


def write(results: dict, repeat: int) -> str:
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {machine}: wall time of the command, process start to exit "
             f"(median of {repeat}; the first-ever run once). 'stopped': the data dir exists, no server; "
             "'running': left running by the previous command (the usual case).", "",
             "| command | server | median (s) | min (s) | target (s) |", "|---|---|---:|---:|---:|"]
    for row in results["rows"]:
        target = TARGETS.get(row["command"]) if row["server"] == "running" else None
        lines.append(f"| {row['command']} | {row['server']} | {row['median_s']:.2f} | {row['min_s']:.2f} | "
                     f"{'< ' + format(target, 'g') if target else ''} |")
    imports = ", ".join(f"{name} {seconds:.2f}" for name, seconds in results["imports_of_runs_s"].items())
    lines += ["", f"Import time of `runs` by top-level package (s, python -X importtime): {imports}."]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_latency.md").write_text(text)
    (RESULTS / "cli_latency.json").write_text(json.dumps({**results, "machine": machine}, indent=2) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (default: 5)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="healthtech-latency-"))
    try:
        results = measure(args.repeat, work)
    finally:
        subprocess.run([CLI, "db", "stop", "--force"], cwd=work, env={**os.environ, "PGDATA_DIR": str(work / "pgdata")},
                       capture_output=True, timeout=120)
        shutil.rmtree(work, ignore_errors=True)
    print(write(results, args.repeat), end="")


if __name__ == "__main__":
    main()
