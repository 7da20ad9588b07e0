"""The run-history subcommands: ``runs``, ``rejections`` and ``report`` (HTML from the database)."""

import argparse
import csv
import json
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import timezone
from pathlib import Path
from typing import Any, Optional, TextIO

from .csv_export import escape_cell
from .db import DbConfig, connect
from .schema import REASON_CODES, SHEET_COLUMNS

COMMANDS = ("runs", "rejections", "report")
RAW_SHOWN = 40  # characters of a raw cell on the console
FILE_SHOWN = 28  # characters of an input file name in the runs table
# rejections --csv: the raw cells' columns in rejected_rows.csv's order (doctors', then appointments').
CSV_RAW_COLUMNS = tuple(dict.fromkeys(column for columns in SHEET_COLUMNS.values() for column in columns))


def add_parsers(commands: Any, listing: Sequence[argparse.ArgumentParser],
                report_parents: Sequence[argparse.ArgumentParser]) -> None:
    """Register the three subcommands on the CLI's subparsers: ``listing`` are the parents (shared
    options) of ``runs`` and ``rejections``, which print to stdout only; ``report_parents`` of ``report``."""
    runs = commands.add_parser("runs", parents=list(listing), help="list recent runs from etl_runs",
                               description="List runs (newest first): id, start, duration (start to end of the "
                                           "run), source, export date, mode, status, input files, appointment rows read/loaded/"
                                           "rejected and the overall quality.")
    runs.add_argument("--limit", type=_at_least(1), default=20, help="runs to list (default: 20)")
    runs.add_argument("--json", action="store_true", help="print JSON (every ledger field) instead of a table")

    rejections = commands.add_parser(
        "rejections", parents=list(listing), help="list rejected rows of a run",
        description="Rejected rows of a run from etl_rejections (doctors first, then by row number), their "
                    "cells in the workbook's column order. They hold patient ids: handle the output as "
                    "protected health information.")
    rejections.add_argument("--run-id", help="run id (default: the latest run)")
    rejections.add_argument("--reason", type=_reason_code, help="only rows with this reason code, e.g. unknown_doctor")
    rejections.add_argument("--limit", type=_at_least(0), default=100, help="rows to list, 0 = all (default: 100)")
    rejections.add_argument("--csv", action="store_true",
                            help="write CSV to stdout (formula-like cells escaped) instead of a table")
    for listing_command in (runs, rejections):  # stdout is their output: no report dir, no JSON log lines
        listing_command.set_defaults(report_dir=None, json_logs=False)

    report = commands.add_parser(
        "report", parents=list(report_parents), help="rebuild quality_report.html of a stored run",
        description="Rebuild the HTML quality report of a run from the database alone, into "
                    "<report-dir>/<run_id>/quality_report.html.")
    report.add_argument("--run-id", help="run id (default: the latest run)")


def run(args: argparse.Namespace, db_config: DbConfig, out: Optional[TextIO] = None) -> None:
    command = {"runs": _runs, "rejections": _rejections}.get(args.command, _report)
    command(args, db_config, out or sys.stdout)


def _runs(args: argparse.Namespace, db_config: DbConfig, out: TextIO) -> None:
    from .history import file_name, list_runs
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
    columns = ("run id", "started (UTC)", "duration s", "source", "export", "mode", "status",
               "files (doctors / appointments)", "read", "loaded", "rejected", "quality")
    rows = [(r["run_id"], r["started_at"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
             None if r["duration_seconds"] is None else round(r["duration_seconds"], 1), r["source"],
             r["export_date"] or "-", r["mode"], r["status"],
             " / ".join(_shortened(file_name(r[key]) or "-") for key in ("doctors_file", "appointments_file")),
             r["rows_read"], r["rows_loaded"], r["rows_rejected"], r["quality"]) for r in runs]
    out.write(format_table(columns, rows) + "\n(rows: appointments; duration: from the run's start to its end)\n")


def _rejections(args: argparse.Namespace, db_config: DbConfig, out: TextIO) -> None:
    from .history import count_rejected, get_run, rejected_rows
    from .queries import format_table

    with closing(connect(db_config)) as connection:
        run = get_run(connection, args.run_id)
        run_id = run["run_id"]
        total = count_rejected(connection, run_id, args.reason)
        rows = rejected_rows(connection, run_id, args.reason, args.limit or None)
    if args.csv:
        raw_keys = list(CSV_RAW_COLUMNS) + list(dict.fromkeys(  # then any other cell, first seen first
            key for row in rows for key in (row["raw"] or {}) if key not in CSV_RAW_COLUMNS))
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
              " ".join(f"{key}={_short_cell(value)}" for key, value in in_sheet_order(row["entity"], row["raw"])))
             for row in rows]
    out.write(f"run {run_id}: {_rejected_line(total, len(rows), args.reason)}\n")
    if total == 0 and args.reason is None and _rejected_in_ledger(run):
        out.write("(its rejected rows were pruned: etl_rejections keeps those of the last --keep-runs runs)\n")
    out.write(format_table(columns, table) + "\n")


def _rejected_line(total: int, shown: int, reason: Optional[str]) -> str:
    """``455 rejected rows with reason X, showing the first 100; --limit 0 for all``."""
    line = f"{total:,} rejected row{'' if total == 1 else 's'}" + (f" with reason {reason}" if reason else "")
    return line + (f", showing the first {shown:,}; --limit 0 for all" if shown < total else "")


def _rejected_in_ledger(run: dict[str, Any]) -> int:
    counts = run.get("counts") or {}
    return sum(int((counts.get(entity) or {}).get("rejected") or 0) for entity in SHEET_COLUMNS)


def in_sheet_order(entity: str, raw: Optional[dict[str, Any]]) -> list[tuple[str, Any]]:
    """A rejected row's cells (jsonb keeps no order) in the workbook's column order, then any other."""
    raw = raw or {}
    order = [key for key in SHEET_COLUMNS.get(entity, ()) if key in raw]
    return [(key, raw[key]) for key in order + [key for key in raw if key not in order]]


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


def _shortened(name: str, width: int = FILE_SHOWN) -> str:
    """``appointments_2025_...november.xlsx``: the start and the end (extension, often a date) kept."""
    if len(name) <= width:
        return name
    tail = (width - 3) // 2
    return name[:width - 3 - tail] + "..." + name[-tail:]


def _reason_code(text: str) -> str:
    if text not in REASON_CODES:
        raise argparse.ArgumentTypeError(f"unknown reason code {text!r}; the codes are: {', '.join(REASON_CODES)}")
    return text


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
