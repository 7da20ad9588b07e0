"""The ``healthtech-etl`` command: ``etl``, ``queries``, ``run`` (etl then queries), ``sample``, the
run history (``runs``, ``rejections``, ``report``) and ``db status|start|stop`` (embedded PostgreSQL).

Exit codes: 0 ok, 2 usage/config, 3 input file problem, 4 database problem, 5 quality gate, 6 loaded
but the report not written, 130 interrupted (SIGINT or SIGTERM); 1 only for a bug. Every failure is
one line on stderr (a bug's traceback goes to the log file only), and everything is checked before
an embedded server starts or a folder is created.
"""

import argparse
import logging
import os
import signal
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

from . import __version__, history_commands, progress
from .db import DEFAULT_KEEP_RUNS, DbConfig, embedded_pgdata, read_dotenv, resolve_config
from .errors import EXIT_CODES, ConfigError, EtlError, InputFileError, Interrupted, ReportError
from .html_report import HTML_FILE
from .logs import DEFAULT_LOG_MAX_BYTES, LOG_FILE_NAME, configure_logging
from .paths import check_output_dir, describe_os_error, make_output_dir
from .quality import FAIL_ON_CHOICES, summary_lines
from .redact import redact

if TYPE_CHECKING:  # pipeline imports pandas: only when a run needs it
    from .pipeline import EtlSettings, RunProgress

logger = logging.getLogger("healthtech_etl.cli")

DEFAULT_DOCTORS = "data/raw/doctors.xlsx"
DEFAULT_APPOINTMENTS = "data/raw/appointments.xlsx"


def _as_of(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (then exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {redact(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(ConfigError.exit_code)


def build_parser(env: dict[str, str]) -> argparse.ArgumentParser:
    epilog = ("exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_CODES.items()))
              + ". Database: DATABASE_URL or DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD (also read from .env); "
              "with neither, an embedded PostgreSQL in .pgdata/.")
    parser = OneLineParser(prog="healthtech-etl", epilog=epilog, description="Clean clinic Excel exports (doctors, "
                           "appointments), report their quality and load PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # Each command gets the options that apply to it: every command that reaches the database logs to
    # a file; report-dir and JSON log lines for those whose stdout is not their data (runs and
    # rejections print JSON / CSV there); quiet for the ETL (progress, summary). Log options are
    # listed last, under "logging" (argparse merges the parents' groups of the same title).
    logs = OneLineParser(add_help=False)
    logging_options = logs.add_argument_group("logging")
    logging_options.add_argument("--log-dir", type=Path, default=Path(env.get("LOG_DIR", "logs")),
                                 help=f"where {LOG_FILE_NAME} goes (default: logs/)")
    logging_options.add_argument("--log-max-bytes", type=int,
                                 default=env.get("LOG_MAX_BYTES", str(DEFAULT_LOG_MAX_BYTES)),
                                 help="rotate the log file at this size, keeping 5 old files; 0: never "
                                 f"(env LOG_MAX_BYTES, default {DEFAULT_LOG_MAX_BYTES})")
    logging_options.add_argument("--verbose", "-v", action="store_true", help="show info messages on the console")
    outputs = OneLineParser(add_help=False)
    outputs.add_argument("--report-dir", type=Path, default=Path(env.get("REPORT_DIR", "reports")),
                         help="where quality_report.json/.html, rejected_rows.csv and query CSVs go "
                         "(default: reports/)")
    outputs.add_argument_group("logging").add_argument("--json-logs", action="store_true",
                                                       help="log JSON lines (as on AWS)")
    quiet = OneLineParser(add_help=False)
    quiet.add_argument("--quiet", "-q", action="store_true", help="no progress display and no summary")

    etl = OneLineParser(add_help=False)
    etl.add_argument("--doctors", type=Path, default=Path(env.get("DOCTORS_INPUT") or DEFAULT_DOCTORS),
                     help=f"doctors workbook (env DOCTORS_INPUT, default {DEFAULT_DOCTORS})")
    etl.add_argument("--appointments", type=Path, default=Path(env.get("APPOINTMENTS_INPUT") or DEFAULT_APPOINTMENTS),
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
    etl.add_argument("--contract", type=Path, default=env.get("QUALITY_CONTRACT") or None, metavar="FILE",
                     help="quality contract: a quality.toml, or a pyproject.toml with [tool.healthtech-etl.quality] "
                     "(env QUALITY_CONTRACT; default: the built-in thresholds, as in the repository's quality.toml)")
    etl.add_argument("--keep-runs", type=int, default=env.get("KEEP_RUNS", str(DEFAULT_KEEP_RUNS)),
                     help="keep the etl_rejections rows and etl_run_reports snapshots of this many most recent runs "
                     f"(env KEEP_RUNS, default {DEFAULT_KEEP_RUNS})")
    etl.add_argument("--mode", choices=("replace", "merge"), default=env.get("LOAD_MODE") or "replace",
                     help="replace: the tables become this file's rows; merge: upsert by id, keep rows absent from "
                     "the file, record appointment changes in appointment_history (env LOAD_MODE, default replace)")
    etl.add_argument("--source", default=env.get("SOURCE_NAME") or "default", metavar="NAME", help="the clinic: a "
                     "load replaces or merges only its rows (a-z, 0-9, _, -; env SOURCE_NAME, default: default)")
    etl.add_argument("--export-date", type=_as_of, metavar="YYYY-MM-DD", help="the export's date (default: today)")
    etl.add_argument("--allow-older", action="store_true", help="merge an older export, or load loaded files again")

    commands.add_parser("etl", parents=[outputs, quiet, etl, logs], help="extract, clean, report and load",
                        description="Extract, clean, report and load the workbooks (one transaction).")
    commands.add_parser("queries", parents=[outputs, logs], help="answer the business questions",
                        description="Run sql/*.sql, print each result and save it as CSV in the report dir.")
    commands.add_parser("run", parents=[outputs, quiet, etl, logs], help="etl, then queries",
                        description="The ETL, then the business questions.")
    history_commands.add_parsers(commands, listing=[logs], report_parents=[outputs, logs])
    sample = commands.add_parser("sample", help="write messy sample workbooks",
                                 description="Write doctors.xlsx and appointments.xlsx with realistic mess.")
    sample.add_argument("--rows", type=int, default=200, help="appointment rows (default: 200)")
    sample.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    sample.add_argument("--out-dir", type=Path, default=Path("data/raw"), help="default: data/raw/")
    sample.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    db = commands.add_parser("db", help="the embedded PostgreSQL: status, start, stop",
                             description="Manage the embedded PostgreSQL kept in .pgdata/ (env PGDATA_DIR). Runs start "
                             "it on demand and leave it running for the next command; it stops after "
                             "EMBEDDED_IDLE_MINUTES (default 30; 0: never) without use, or on 'stop'.")
    db.add_argument("action", choices=("status", "start", "stop"))
    db.add_argument("--force", action="store_true", help="stop: even while a run is using it (its load rolls back)")
    return parser


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Optional[list[str]] = None) -> int:
    """The command; SIGTERM (timeout, kill, a container stop) is handled exactly like Ctrl-C: the run
    unwinds, the embedded server's handles are released and the user is told the truth."""
    try:
        previous, restore = signal.signal(signal.SIGTERM, _raise_interrupt), True
    except ValueError:  # not the main thread: leave signals alone
        previous, restore = None, False
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before a run started (or again while explaining one)
        print("healthtech-etl: interrupted; nothing was committed", file=sys.stderr)
        return Interrupted.exit_code
    finally:
        if restore:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: Optional[list[str]]) -> int:
    try:
        dotenv = read_dotenv(Path(".env"))
    except ConfigError as exc:
        return _fail(exc)
    env = {**dotenv, **os.environ}
    from_dotenv = set(dotenv) - set(os.environ)
    args = build_parser(env).parse_args(argv)
    progress.configure(progress.wanted(getattr(args, "quiet", False)))
    from .runtime_check import missing_runtime

    missing = None if args.command == "db" else missing_runtime()
    if missing is not None:  # the wheel without its runtime extra: one line, not a traceback
        return _fail(missing)
    if args.command == "sample":
        return _sample(args)
    if args.command == "db":
        return _db(args, env, from_dotenv)
    if args.command in ("etl", "run"):
        from .pipeline import RunProgress  # pandas (0.3 s): only for the commands that run the ETL

        run_state: Any = RunProgress()
    else:  # (its fields, never set: nothing of a run to explain after an interrupt)
        run_state = argparse.Namespace(run=None, committed=False)
    db_config: Optional[DbConfig] = None
    logging_ready = False
    try:
        # Everything that can be checked is checked before a server starts or a folder appears.
        configured = DbConfig.from_env(env, from_dotenv)
        settings = _settings(args) if args.command in ("etl", "run") else None
        if args.report_dir is not None:  # runs and rejections write no report
            check_output_dir(args.report_dir, "--report-dir")
        check_output_dir(args.log_dir, "--log-dir")
        configure_logging(json_logs=args.json_logs, log_dir=args.log_dir, max_bytes=args.log_max_bytes)
        logging_ready = True
        for handler in logging.getLogger("healthtech_etl").handlers:
            if not isinstance(handler, logging.FileHandler):
                # The summary is printed below; the console log must not say it again.
                handler.addFilter(lambda record: not getattr(record, "summary", False))
                if args.verbose:
                    handler.setLevel(logging.INFO)
        db_config = configured or resolve_config(env, from_dotenv=from_dotenv)
        logger.info("database: %s", db_config.describe())
        exit_code = _etl(args, settings, db_config, run_state) if settings is not None else 0
        if args.command in ("queries", "run"):
            _queries(args, db_config, run_state.run.run_id if run_state.committed and run_state.run else None)
        if args.command in history_commands.COMMANDS:
            history_commands.run(args, db_config)
        return exit_code
    except EtlError as exc:
        return _fail(exc, logged=logging_ready)
    except KeyboardInterrupt as interrupt:
        return _fail(Interrupted(_explain_interrupt(run_state, db_config, str(interrupt) or "SIGINT")),
                     logged=logging_ready)
    except Exception as exc:  # a bug: one clear line on the console, the traceback in the log file
        if logging_ready:
            logger.exception("unexpected failure", extra={"console": False})
        print(f"healthtech-etl: unexpected error: {type(exc).__name__}: {redact(str(exc))[:300]}"
              + (" (details in the log)" if logging_ready else ""), file=sys.stderr)
        return 1
    finally:
        progress.current().stop()  # a stage cut short by an error: clear its line


def _fail(exc: EtlError, logged: bool = False) -> int:
    message = redact(str(exc))
    if logged:
        logger.error("%s", message, extra={"console": False})
    print(f"healthtech-etl: error: {message}", file=sys.stderr)
    return exc.exit_code


def _explain_interrupt(progress: "RunProgress", db_config: Optional[DbConfig], signal_name: str) -> str:
    """What an interrupt left behind, from the ledger (``etl_runs``), never guessed."""
    from .load import record_failed_run

    run = progress.run
    if run is None:
        return "interrupted; nothing was committed"
    try:
        status = "succeeded" if progress.committed else record_failed_run(
            db_config, run, f"interrupted ({signal_name}) before the load committed")
        if status == "succeeded":
            progress.mark_report_loaded()
    except KeyboardInterrupt:
        return f"interrupted again; whether run {run.run_id} committed is unknown: check healthtech.etl_runs"
    return {"succeeded": f"interrupted after the load committed: run {run.run_id} succeeded",
            "failed": f"interrupted; nothing was committed (run {run.run_id} recorded as failed)"}.get(
        status, f"interrupted; PostgreSQL unreachable, so whether run {run.run_id} committed is unknown")


def _settings(args: argparse.Namespace) -> "EtlSettings":
    """The run's settings validated (exit 2), then its reader and inputs (exit 3), before anything starts."""
    from .guard import Limits
    from .pipeline import EtlSettings
    from .read import calamine

    settings = EtlSettings(as_of=args.as_of or date.today(), report_dir=args.report_dir, log_dir=args.log_dir,
                           day_first=args.day_first, horizon_days=args.horizon_days, fail_on=args.fail_on,
                           keep_runs=args.keep_runs, mode=args.mode, contract=args.contract, source=args.source,
                           export_date=args.export_date, allow_older=args.allow_older)
    settings.validate()
    calamine()  # the reader and its release, before a server starts
    Limits.from_env(os.environ)
    for entity, path in (("doctors", args.doctors), ("appointments", args.appointments)):
        if not Path(path).exists():
            raise InputFileError(f"{entity} file not found: {path}")
        if not Path(path).is_file():
            raise InputFileError(f"{entity} file {path} is not a file")
    return settings


def _etl(args: argparse.Namespace, settings: "EtlSettings", db_config: DbConfig, run_state: "RunProgress") -> int:
    from .pipeline import InputFile, run_etl

    result = run_etl(InputFile(args.doctors, sheet=args.doctors_sheet),
                     InputFile(args.appointments, sheet=args.appointments_sheet), db_config, settings, run_state)
    if result.already_loaded_by:
        print(f"already loaded by run {result.already_loaded_by} (source {settings.source}): nothing written "
              "(--allow-older loads it again)")
    elif not args.quiet:
        print("\n".join(summary_lines(result.report)))
        if "merge" in result.report:
            changes = {entity: result.report["merge"][entity] for entity in ("doctors", "appointments", "history")}
            print("  merge: " + "; ".join(f"{entity} " + ", ".join(f"{key} {value:,}" for key, value in counts.items())
                                          for entity, counts in changes.items()))
        html = Path(result.report_path).with_name(HTML_FILE)
        print(f"  report: {result.report_path}" + (f" and {html}" if html.is_file() else "")
              + f"   rejected rows: {result.rejections_path}   log: {Path(args.log_dir) / LOG_FILE_NAME}")
    if result.warning:
        print(f"healthtech-etl: warning: {redact(result.warning)}", file=sys.stderr)
    return result.exit_code


def _queries(args: argparse.Namespace, db_config: DbConfig, after_load: Optional[str] = None) -> None:
    from .queries import format_table, run_queries

    try:
        results = run_queries(db_config, out_dir=args.report_dir)
    except OSError as exc:
        reason = f"cannot write the query results in {args.report_dir}: {describe_os_error(exc)}"
        if after_load:
            raise ReportError(f"run {after_load} succeeded (data loaded), but {reason}") from exc
        raise ConfigError(reason) from exc
    except EtlError as exc:
        if after_load:
            exc.args = (f"run {after_load} succeeded (data loaded), but the queries failed: {exc}",)
        raise
    for result in results:
        print(f"\n== {result.name} ==\n{format_table(result.columns, result.rows)}")
    print(f"\n(query results saved as CSV in {args.report_dir}/)")


def _sample(args: argparse.Namespace) -> int:
    from .sample import write_sample_workbooks

    if args.rows < 1:
        return _fail(ConfigError("--rows must be 1 or more"))
    try:
        make_output_dir(args.out_dir, "--out-dir")
        doctors, appointments = write_sample_workbooks(args.out_dir, rows=args.rows, seed=args.seed)
    except ConfigError as exc:
        return _fail(exc)
    except OSError as exc:
        return _fail(ConfigError(f"cannot write the sample workbooks in {args.out_dir}: {describe_os_error(exc)}"))
    print(f"wrote {doctors} and {appointments}")
    return 0


def _db(args: argparse.Namespace, env: dict[str, str], from_dotenv: set[str]) -> int:
    """``db status|start|stop`` for the embedded server in PGDATA_DIR (default .pgdata)."""
    from .embedded import idle_minutes_from, server_state, start_server, stop_server

    pgdata = embedded_pgdata(env)
    try:
        configured = DbConfig.from_env(env, from_dotenv)
        if args.action == "status":
            if configured is not None:
                print(f"runs use {configured.describe()}, not the embedded server")
            print(server_state(pgdata).describe())
        elif args.action == "start":
            minutes = idle_minutes_from(env)
            if not pgdata.exists():
                make_output_dir(pgdata.parent, "PGDATA_DIR parent")
            config = start_server(pgdata, minutes)
            until = f"stops after {minutes:g} idle minutes, or" if minutes else "runs until you"
            print(f"embedded PostgreSQL running: {config.url()} - {until} stop it with 'healthtech-etl db stop' "
                  "(or 'make db-stop')")
        else:
            print(stop_server(pgdata, force=args.force))
        return 0
    except EtlError as exc:
        return _fail(exc)


def entry() -> NoReturn:
    """The ``healthtech-etl`` command."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
