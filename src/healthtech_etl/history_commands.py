"""The run-history subcommands: ``runs``, ``rejections`` and ``report`` (HTML from the database)."""

import argparse
import csv
import json
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import timezone
from pathlib import Path
from typing import Any, Optional, TextIO

from .csv_export import escape_cell
from .db import DbConfig, connect

COMMANDS = ("runs", "rejections", "report")
RAW_SHOWN = 40  # characters of a raw cell on the console


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the three subcommands on the CLI's subparsers."""
    runs = commands.add_parser("runs", parents=[common], help="list recent runs from etl_runs",
                               description="List runs (newest first): id, start, duration, status, appointment "
                                           "rows read/loaded/rejected and the overall quality.")
    runs.add_argument("--limit", type=_at_least(1), default=20, help="runs to list (default: 20)")
    runs.add_argument("--json", action="store_true", help="print JSON (every ledger field) instead of a table")

    rejections = commands.add_parser(
        "rejections", parents=[common], help="list rejected rows of a run",
        description="Rejected rows of a run from etl_rejections (doctors first, then by row number). "
                    "They hold patient ids: handle the output as protected health information.")
    rejections.add_argument("--run-id", help="run id (default: the latest run)")
    rejections.add_argument("--reason", help="only rows with this reason code, e.g. unknown_doctor")
    rejections.add_argument("--limit", type=_at_least(0), default=100, help="rows to list, 0 = all (default: 100)")
    rejections.add_argument("--csv", action="store_true",
                            help="write CSV to stdout (formula-like cells escaped) instead of a table")

    report = commands.add_parser(
        "report", parents=[common], help="rebuild quality_report.html of a stored run",
        description="Rebuild the HTML quality report of a run from the database alone, into "
                    "<report-dir>/<run_id>/quality_report.html.")
    report.add_argument("--run-id", help="run id (default: the latest run)")


def run(args: argparse.Namespace, db_config: DbConfig, out: Optional[TextIO] = None) -> None:
    command = {"runs": _runs, "rejections": _rejections}.get(args.command, _report)
    command(args, db_config, out or sys.stdout)


def _runs(args: argparse.Namespace, db_config: DbConfig, out: TextIO) -> None:
    from .history import list_runs
    from .queries import format_table

    with closing(connect(db_config)) as connection:
        runs = list_runs(connection, args.limit)
    if args.json:
        out.write(json.dumps(runs, indent=2, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v))
                  + "\n")
        return
    if not runs:
        out.write("no run recorded in this database yet\n")
        return
    columns = ("run id", "started (UTC)", "duration s", "status", "read", "loaded", "rejected", "quality")
    rows = [(r["run_id"], r["started_at"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), r["duration_seconds"],
             r["status"], r["rows_read"], r["rows_loaded"], r["rows_rejected"], r["quality"]) for r in runs]
    out.write(format_table(columns, rows) + "\n(rows: appointments)\n")


def _rejections(args: argparse.Namespace, db_config: DbConfig, out: TextIO) -> None:
    from .history import get_run, rejected_rows
    from .queries import format_table

    with closing(connect(db_config)) as connection:
        run_id = get_run(connection, args.run_id)["run_id"]
        rows = rejected_rows(connection, run_id, args.reason, args.limit or None)
    if args.csv:
        raw_keys = list(dict.fromkeys(key for row in rows for key in (row["raw"] or {})))  # first-seen order
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["run_id", "entity", "source_file", "row_number", "record_id", "reasons", *raw_keys])
        for row in rows:
            raw = row["raw"] or {}
            values = [row["run_id"], row["entity"], row["source_file"], row["row_number"], row["record_id"],
                      ";".join(row["reasons"]), *(raw.get(key) for key in raw_keys)]
            writer.writerow([escape_cell(value) for value in values])
        return
    columns = ("entity", "file", "row", "record id", "reasons", "raw cells")
    table = [(row["entity"], row["source_file"], row["row_number"], row["record_id"], ",".join(row["reasons"]),
              " ".join(f"{key}={_short_cell(value)}" for key, value in (row["raw"] or {}).items())) for row in rows]
    what = f" with reason {args.reason}" if args.reason else ""
    out.write(f"run {run_id}: {len(rows)} rejected row(s){what}"
              + (f" (first {args.limit}; --limit 0 for all)" if args.limit and len(rows) == args.limit else "")
              + "\n" + format_table(columns, table) + "\n")


def _report(args: argparse.Namespace, db_config: DbConfig, out: TextIO) -> None:
    from .history import SNAPSHOT_PRUNED_NOTE, page_for_run
    from .html_report import HTML_FILE, write_html

    page = page_for_run(db_config, args.run_id)
    run_id = page.report["run_id"]
    path = write_html(Path(args.report_dir) / str(run_id) / HTML_FILE, page)
    out.write(f"wrote {path}\n")
    if SNAPSHOT_PRUNED_NOTE in page.notes:
        out.write(f"note: the report snapshot of run {run_id} was pruned (etl_run_reports keeps the last "
                  "--keep-runs runs): the page is rebuilt from etl_runs alone\n")


def _short_cell(value: Any) -> str:
    text = repr("" if value is None else str(value))
    return text if len(text) <= RAW_SHOWN else text[:RAW_SHOWN] + "..."


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more")
        return value
    return parse
