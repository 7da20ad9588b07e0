"""The ``healthtech-etl`` command: ``etl``, ``queries``, ``run`` (etl then queries), ``sample``,
and the run history: ``runs``, ``rejections``, ``report``.

Exit codes: 0 ok, 2 usage/config, 3 input file problem, 4 database problem, 5 quality gate.
"""

import argparse
import logging
import sys
from datetime import date
from pathlib import Path
from typing import Optional

from . import __version__, history_commands, progress
from .db import DbConfig, load_dotenv, resolve_config
from .errors import EXIT_CODES, ConfigError, EtlError
from .html_report import HTML_FILE
from .logs import LOG_FILE_NAME, configure_logging
from .quality import FAIL_ON_CHOICES, summary_lines

logger = logging.getLogger("healthtech_etl.cli")

DEFAULT_DOCTORS = "data/raw/doctors.xlsx"
DEFAULT_APPOINTMENTS = "data/raw/appointments.xlsx"


def _as_of(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc


def build_parser(env: dict[str, str]) -> argparse.ArgumentParser:
    epilog = "exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_CODES.items()))
    parser = argparse.ArgumentParser(
        prog="healthtech-etl",
        description="Clean clinic Excel exports (doctors, appointments), report their quality and load PostgreSQL.",
        epilog=epilog + ". Database: DATABASE_URL or DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD "
        "(also read from .env); with neither, an embedded PostgreSQL in .pgdata/.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--report-dir", type=Path, default=Path(env.get("REPORT_DIR", "reports")),
                        help="where quality_report.json, rejected_rows.csv and query CSVs go (default: reports/)")
    common.add_argument("--log-dir", type=Path, default=Path(env.get("LOG_DIR", "logs")),
                        help=f"where {LOG_FILE_NAME} goes (default: logs/)")
    common.add_argument("--json-logs", action="store_true", help="log JSON lines (as on AWS)")
    common.add_argument("--verbose", "-v", action="store_true", help="show info messages on the console")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress display and no summary")

    etl = argparse.ArgumentParser(add_help=False)
    etl.add_argument("--doctors", type=Path, default=Path(env.get("DOCTORS_INPUT") or DEFAULT_DOCTORS),
                     help=f"doctors workbook (env DOCTORS_INPUT, default {DEFAULT_DOCTORS})")
    etl.add_argument("--appointments", type=Path,
                     default=Path(env.get("APPOINTMENTS_INPUT") or DEFAULT_APPOINTMENTS),
                     help=f"appointments workbook (env APPOINTMENTS_INPUT, default {DEFAULT_APPOINTMENTS})")
    etl.add_argument("--doctors-sheet", help="sheet name (default: the first sheet)")
    etl.add_argument("--appointments-sheet", help="sheet name (default: the first sheet)")
    etl.add_argument("--as-of", type=_as_of, default=None,
                     help="reference date for the booking date range, YYYY-MM-DD (default: today)")
    etl.add_argument("--horizon-days", type=int, default=365,
                     help="latest accepted booking date = as-of + this many days (default: 365)")
    etl.add_argument("--day-first", action="store_true", help="read ambiguous dates as DD/MM/YYYY")
    etl.add_argument("--fail-on", choices=FAIL_ON_CHOICES, default="never",
                     help="exit 5 before loading when quality reaches this level (default: never)")
    etl.add_argument("--reader", choices=("auto", "fastexcel", "calamine", "openpyxl"), default="auto",
                     help="xlsx reader (default: the fastest installed)")
    etl.add_argument("--mode", choices=("replace", "merge"), default=env.get("LOAD_MODE") or "replace",
                     help="replace: the tables become this file's rows; merge: upsert by id, keep rows absent "
                          "from the file, record appointment changes in appointment_history "
                          "(env LOAD_MODE, default replace)")

    commands.add_parser("etl", parents=[common, etl], help="extract, clean, report and load",
                        description="Extract, clean, report and load the workbooks (one transaction).")
    commands.add_parser("queries", parents=[common], help="answer the business questions",
                        description="Run sql/*.sql, print each result and save it as CSV in the report dir.")
    commands.add_parser("run", parents=[common, etl], help="etl, then queries",
                        description="The ETL, then the business questions.")
    history_commands.add_parsers(commands, common)
    sample = commands.add_parser("sample", help="write messy sample workbooks",
                                 description="Write doctors.xlsx and appointments.xlsx with realistic mess.")
    sample.add_argument("--rows", type=int, default=200, help="appointment rows (default: 200)")
    sample.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    sample.add_argument("--out-dir", type=Path, default=Path("data/raw"), help="default: data/raw/")
    sample.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    env = load_dotenv(Path(".env"))
    parser = build_parser(env)
    args = parser.parse_args(argv)
    progress.configure(progress.wanted(args.quiet))
    if args.command == "sample":
        return _sample(args)
    configure_logging(json_logs=args.json_logs, log_dir=args.log_dir)
    for handler in logging.getLogger("healthtech_etl").handlers:
        if not isinstance(handler, logging.FileHandler):
            # The summary is printed below; the console log must not say it again.
            handler.addFilter(lambda record: not getattr(record, "summary", False))
            if args.verbose:
                handler.setLevel(logging.INFO)
    try:
        db_config = resolve_config(env)
        logger.info("database: %s", db_config.describe())
        if args.command in ("etl", "run"):
            _etl(args, db_config)
        if args.command in ("queries", "run"):
            _queries(args, db_config)
        if args.command in history_commands.COMMANDS:
            history_commands.run(args, db_config)
        return 0
    except EtlError as exc:
        logger.error("%s", exc, extra={"console": False})
        print(f"healthtech-etl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("healthtech-etl: interrupted; nothing was committed", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one clear line on the console, the traceback in the log file
        logger.exception("unexpected failure", extra={"console": False})
        print(f"healthtech-etl: unexpected error: {type(exc).__name__}: {exc} (details in the log)", file=sys.stderr)
        return 1
    finally:
        progress.current().stop()  # a stage cut short by an error: clear its line


def _etl(args: argparse.Namespace, db_config: DbConfig) -> None:
    from .pipeline import EtlSettings, InputFile, run_etl

    if args.horizon_days < 0:
        raise ConfigError("--horizon-days must be 0 or more")
    settings = EtlSettings(
        as_of=args.as_of or date.today(),
        report_dir=args.report_dir,
        log_dir=args.log_dir,
        day_first=args.day_first,
        horizon_days=args.horizon_days,
        fail_on=args.fail_on,
        reader=args.reader,
        mode=args.mode,
    )
    result = run_etl(
        InputFile(args.doctors, sheet=args.doctors_sheet),
        InputFile(args.appointments, sheet=args.appointments_sheet),
        db_config,
        settings,
    )
    if args.quiet:
        return
    print("\n".join(summary_lines(result.report)))
    if "merge" in result.report:
        merged = result.report["merge"]
        print("  merge: " + "; ".join(
            f"{entity} " + ", ".join(f"{key} {value:,}" for key, value in merged[entity].items())
            for entity in ("doctors", "appointments", "history")))
    html = Path(result.report_path).with_name(HTML_FILE)
    print(f"  report: {result.report_path}" + (f" and {html}" if html.is_file() else "")
          + f"   rejected rows: {result.rejections_path}   log: {Path(args.log_dir) / LOG_FILE_NAME}")


def _queries(args: argparse.Namespace, db_config: DbConfig) -> None:
    from .queries import format_table, run_queries

    for result in run_queries(db_config, out_dir=args.report_dir):
        print(f"\n== {result.name} ==")
        print(format_table(result.columns, result.rows))
    print(f"\n(query results saved as CSV in {args.report_dir}/)")


def _sample(args: argparse.Namespace) -> int:
    from .sample import write_sample_workbooks

    if args.rows < 1:
        print("healthtech-etl: error: --rows must be 1 or more", file=sys.stderr)
        return ConfigError.exit_code
    doctors, appointments = write_sample_workbooks(args.out_dir, rows=args.rows, seed=args.seed)
    print(f"wrote {doctors} and {appointments}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
