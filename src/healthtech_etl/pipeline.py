"""One ETL run: extract -> clean -> quality report -> load, with a run id and a ledger row. Critical
problems (unreadable file, missing column, unreachable database, quality gate) raise before the
database is touched; a failure during the load is rolled back."""

import hashlib
import json
import logging
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import numpy as np
import pandas as pd

from . import backlog, clean, history, offending, profile, progress, quality
from .cells import CONTROL_CHARACTERS
from .contract import Contract
from .contract import load as load_contract
from .db import DbConfig, _short, close_quietly, connect
from .errors import ConfigError, DatabaseError, QualityGateError
from .exports import DEFAULT_SOURCE, StaleExport, validate_source
from .load import DEFAULT_KEEP_RUNS, LOAD_MODES, RunRecord, counts_not_loaded, load_run, record_failed_run
from .logs import REJECTIONS_LOGGER, log_lines
from .merge import loaded_doctor_ids
from .paths import describe_os_error, make_output_dir, write_atomically
from .read import SheetData, read_sheet
from .run_report import FAILED, GATE, HTML_FILE, LOADED, aggregate_in_background, write_run_html
from .schema import APPOINTMENT_COLUMNS, DOCTOR_COLUMNS, ENTITY, REASONS, RECORD_ID, SOURCE_ROW

logger = logging.getLogger(__name__)
rejections_logger = logging.getLogger(REJECTIONS_LOGGER)

REPORT_FILE = "quality_report.json"
REJECTIONS_FILE = "rejected_rows.csv"


@dataclass(frozen=True)
class InputFile:
    """A workbook on local disk; ``name`` is what the ledger calls it (e.g. an s3:// URI)."""

    path: Path
    name: Optional[str] = None
    sheet: Optional[str] = None

    @property
    def display_name(self) -> str:
        return self.name or Path(self.path).name


@dataclass
class EtlSettings:
    as_of: date = field(default_factory=date.today)
    report_dir: Path = Path("reports")
    log_dir: Optional[Path] = Path("logs")
    day_first: bool = False
    horizon_days: int = clean.DEFAULT_HORIZON_DAYS
    fail_on: str = "never"
    mode: str = "replace"  # replace: the file is the whole truth; merge: upsert by id, keep history
    keep_runs: int = DEFAULT_KEEP_RUNS
    contract: Optional[Path] = None  # the quality contract (quality.toml, or a pyproject.toml); None: the defaults
    source: str = DEFAULT_SOURCE  # the clinic: ids are unique per source, replace replaces only its rows
    export_date: Optional[date] = None  # the export's date (None: today); merge refuses one older than loaded
    allow_older: bool = False  # merge an older export, or load bytes already loaded, anyway

    def quality_contract(self) -> Contract:
        """The contract, read and checked (a bad one: ConfigError naming the key and its line)."""
        return load_contract(self.contract)

    def validate(self) -> None:
        validate_source(self.source)
        if self.mode not in LOAD_MODES:
            raise ConfigError(f"the load mode must be one of {', '.join(LOAD_MODES)} (got {self.mode!r})")
        if self.fail_on not in quality.FAIL_ON_CHOICES:
            raise ConfigError(f"--fail-on must be one of {', '.join(quality.FAIL_ON_CHOICES)} (got {self.fail_on!r})")
        if self.horizon_days < 0:
            raise ConfigError("--horizon-days must be 0 or more")
        clean.validate_window(self.as_of, self.horizon_days)
        if self.keep_runs < 1:
            raise ConfigError("--keep-runs must be 1 or more")
        self.quality_contract()


@dataclass
class RunProgress:
    """How far a run got, for whoever must explain an interrupt: ``run`` is set just before the
    load transaction starts, ``committed`` as soon as COMMIT has returned."""

    run: Optional["RunRecord"] = None
    committed: bool = False
    report: Optional[dict[str, Any]] = None
    report_path: Optional[Path] = None

    def mark_report_loaded(self) -> bool:
        """After an interrupt that came once the load had committed: make the report say so (it was
        written before with ``not_loaded``). False if there is no report or it cannot be written."""
        if self.report is None or self.report_path is None:
            return False
        self.report["load_status"] = "succeeded"
        return _publish(self.report_path, self.report) is None


@dataclass
class RunResult:
    run_id: str
    report: dict[str, Any]
    report_path: Path
    rejections_path: Path
    timings: dict[str, float]
    exit_code: int = 0  # 6: loaded, but the report could not be written (``warning`` says why)
    warning: Optional[str] = None
    already_loaded_by: Optional[str] = None  # the run that loaded these bytes for the source: nothing written


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_etl(doctors: InputFile, appointments: InputFile, db_config: DbConfig, settings: EtlSettings,
            run_state: Optional[RunProgress] = None) -> RunResult:
    """Run the whole pipeline once; returns the result or raises a CriticalError. Once the load has
    committed, a report that cannot be written gives ``exit_code`` 6 and a ``warning``, not an error."""
    run_state = run_state if run_state is not None else RunProgress()
    settings.validate()
    run_id, started_at = uuid.uuid4().hex, datetime.now(timezone.utc)
    timings: dict[str, float] = {}
    logger.info("run %s started (as of %s, mode %s)", run_id, settings.as_of.isoformat(), settings.mode)
    inputs = {"doctors": doctors, "appointments": appointments}
    # The inputs' digests for the report and the ledger, beside the read (hashlib works without the GIL).
    digests = _in_background(lambda: {entity: sha256_of(source.path) for entity, source in inputs.items()})
    clock = time.perf_counter()  # read: any problem here is critical, before the database is touched
    progress.start("read", ", ".join(source.display_name for source in inputs.values()))
    columns = {"doctors": DOCTOR_COLUMNS, "appointments": APPOINTMENT_COLUMNS}
    sheets = {entity: read_sheet(file.path, columns[entity], file.sheet, entity) for entity, file in inputs.items()}
    timings["read"] = time.perf_counter() - clock
    progress.done(sum(len(sheet.frame) for sheet in sheets.values()))
    close_quietly(connect(db_config))  # fail fast on an unreachable database, before cleaning
    backlog.replay(db_config, settings.log_dir)  # failed runs the server could not be told about
    # Merge: an appointment of a doctor loaded by an earlier run is valid too.
    loaded_doctors = loaded_doctor_ids(db_config, settings.source) if settings.mode == "merge" else None
    clock = time.perf_counter()
    progress.start("clean")
    doctors_result = clean.clean_doctors(sheets["doctors"].frame, sheets["doctors"].unreadable)
    known_doctors = doctors_result.valid["id"].to_numpy()
    if loaded_doctors is not None:
        known_doctors = np.union1d(known_doctors, loaded_doctors)
    results = {"doctors": doctors_result, "appointments": clean.clean_appointments(
        sheets["appointments"].frame, known_doctors, as_of=settings.as_of, day_first=settings.day_first,
        horizon_days=settings.horizon_days, unreadable=sheets["appointments"].unreadable)}
    timings["clean"] = time.perf_counter() - clock
    progress.done(sum(len(sheet.frame) for sheet in sheets.values()))
    report = build_report(run_id, settings, sheets, results, inputs, digests.result(), loaded_doctors)
    del sheets  # the cells as read (a 1M-row sheet: some 300 MB of objects) are not needed past the report
    gated = quality.gate_tripped(report["status"], settings.fail_on)
    if gated:  # nothing will be loaded: the report says so from its first write
        report.update(load_status="gated", counts=counts_not_loaded(report["counts"]))
    rejected = {entity: result.rejected for entity, result in results.items()}
    try:  # before the load: a report that cannot be written stops the run with nothing changed
        outputs = write_outputs(settings.report_dir, report, rejected, {e: s.display_name for e, s in inputs.items()})
    except OSError as exc:
        raise ConfigError(f"cannot write the reports in {settings.report_dir}: {describe_os_error(exc)}; "
                          "nothing loaded") from exc
    run_state.report, run_state.report_path = report, outputs.report_path
    log_rejections(rejected)
    for line in quality.summary_lines(report):
        logger.info(line, extra={"summary": True})  # the CLI prints it: -v must not repeat it
    run = RunRecord(run_id=run_id, started_at=started_at, doctors_file=doctors.display_name,
                    doctors_sha256=report["inputs"]["doctors"]["sha256"], appointments_file=appointments.display_name,
                    appointments_sha256=report["inputs"]["appointments"]["sha256"], counts=report["counts"],
                    metrics=report["metrics"], mode=settings.mode, source=settings.source,
                    export_date=settings.export_date or date.today())
    if gated:
        _stop_at_gate(db_config, run, report, outputs, settings)
    run_state.run = run
    aggregates = aggregate_in_background(results["doctors"].valid, results["appointments"].valid)  # for the page
    changes = _load(db_config, run, results, outputs, settings, timings)
    if changes is not None and "already_loaded_by" in changes:
        return _already_loaded(run, report, outputs, timings, changes["already_loaded_by"])
    run_state.committed = True
    return _finish(run, report, changes, outputs, settings, db_config, timings, aggregates)


@dataclass
class _Outputs:
    """The run's report files: the JSON written, the rejected rows' CSV being written."""

    report: dict[str, Any]
    report_path: Path
    rejections_path: Path
    rejected: dict[str, pd.DataFrame]
    written: "Future[Any]"
    report_dir: Path

    def rejections_ready(self) -> None:
        """Wait for the rejected rows' CSV (written beside the load; COMMIT waits here)."""
        try:
            self.written.result()
        except OSError as exc:
            raise ConfigError(f"cannot write the reports in {self.report_dir}: {describe_os_error(exc)}; "
                              "nothing loaded") from exc


def _already_loaded(run: RunRecord, report: dict[str, Any], outputs: _Outputs, timings: dict[str, float],
                    by: str) -> RunResult:
    """These bytes were loaded for the source before: nothing written; the report says so."""
    outputs.rejections_ready()
    report.update(load_status="skipped", already_loaded_by=by, counts=counts_not_loaded(report["counts"]))
    logger.info("run %s: already loaded by run %s; nothing written", run.run_id, by)
    _write_json(outputs.report_path, report)
    return RunResult(run.run_id, report, outputs.report_path, outputs.rejections_path, timings, already_loaded_by=by)


def _stop_at_gate(db_config: DbConfig, run: RunRecord, report: dict[str, Any], outputs: "_Outputs",
                  settings: EtlSettings) -> NoReturn:
    """The quality gate stopped the run: record it as gated (ledger tables only, never the data),
    write its page and raise exit 5 - also when PostgreSQL cannot hear of it (then the backlog keeps it)."""
    outputs.rejections_ready()
    tripped = "; ".join(quality.tripped_metrics(report["metrics"], settings.fail_on, report.get("checks")))
    reason = f"data quality is {report['status']} and --fail-on={settings.fail_on}: {tripped}: nothing loaded"
    unrecorded = ""
    try:
        history.record_gated_run(db_config, run, reason, report, outputs.rejected,
                                 {"doctors": run.doctors_file, "appointments": run.appointments_file},
                                 keep_runs=settings.keep_runs)
    except Exception as exc:  # the gate's answer stands; the ledger hears of the run later if it can
        logger.warning("run %s not recorded in etl_runs: %s", run.run_id, _short(exc), extra={"console": False})
        later = backlog.remember(settings.log_dir, run, reason, status="gated")
        unrecorded = (f"; run {run.run_id} not in etl_runs (" + ("the next run that reaches PostgreSQL records it)"
                                                                   if later else "not recorded)"))
    write_run_html(settings.report_dir, report, outputs.rejected, db_config, GATE, outputs.rejections_path)
    raise QualityGateError(f"{reason} (see {outputs.report_path}){unrecorded}")


def _load(db_config: DbConfig, run: RunRecord, results: dict[str, clean.CleanResult], outputs: _Outputs,
          settings: EtlSettings, timings: dict[str, float]) -> Optional[dict[str, Any]]:
    """The load; a failure is recorded in the ledger (or the backlog) and the report says so."""
    clock = time.perf_counter()
    rows = len(results["doctors"].valid) + len(results["appointments"].valid)
    progress.start("load", total=rows)
    source_files = {"doctors": run.doctors_file, "appointments": run.appointments_file}
    try:
        changes = load_run(db_config, run, results["doctors"].valid, results["appointments"].valid, outputs.rejected,
                           source_files, keep_runs=settings.keep_runs, before_commit=outputs.rejections_ready,
                           allow_older=settings.allow_older,
                           judged_by={"as_of": settings.as_of.isoformat(), "day_first": settings.day_first,
                                      "horizon_days": settings.horizon_days})
    except (DatabaseError, StaleExport) as exc:
        outputs.written.exception()  # wait: its own failure, if any, says less than this one
        ledger = record_failed_run(db_config, run, str(exc))
        if ledger == "succeeded":  # the connection died after the server committed: a success
            logger.warning("run %s: %s - but the ledger shows the load committed", run.run_id, exc,
                           extra={"console": False})
            changes = None
        else:
            outputs.report.update(load_status="failed", counts=counts_not_loaded(outputs.report["counts"]))
            try:
                _write_json(outputs.report_path, outputs.report)
            except OSError as write_error:
                logger.warning("could not update %s: %s", outputs.report_path, describe_os_error(write_error),
                               extra={"console": False})
            write_run_html(settings.report_dir, outputs.report, outputs.rejected, db_config, FAILED,
                           outputs.rejections_path)
            if ledger is None:
                later = ("the next run that reaches it records it as failed"
                         if backlog.remember(settings.log_dir, run, str(exc)) else "it is not recorded")
                raise DatabaseError(f"{exc} (run {run.run_id} not in etl_runs: PostgreSQL unreachable; "
                                    f"{later})") from exc
            raise
    timings["load"] = time.perf_counter() - clock
    progress.done(rows)
    return changes


def _finish(run: RunRecord, report: dict[str, Any], changes: Optional[dict[str, Any]], outputs: _Outputs,
            settings: EtlSettings, db_config: DbConfig, timings: dict[str, float], aggregates: Any) -> RunResult:
    """After COMMIT: the report says so; a report that cannot be written is exit 6, not an error."""
    report["load_status"] = "succeeded"
    if changes is not None:
        report["merge"] = changes
    report["timings_seconds"] = {key: round(value, 3) for key, value in timings.items()}
    result = RunResult(run.run_id, report, outputs.report_path, outputs.rejections_path, timings)
    logger.info("run %s loaded %s doctors and %s appointments", run.run_id,
                report["counts"]["doctors"]["loaded"], report["counts"]["appointments"]["loaded"])
    error = _publish(outputs.report_path, report)
    if error is not None:
        result.exit_code = 6
        result.warning = (f"run {run.run_id} succeeded (data loaded and committed), but its report was not "
                          f"published: cannot write {outputs.report_path}: {describe_os_error(error)}")
        logger.warning("%s", result.warning, extra={"console": False})
    else:  # (the page would fail for the same reason: the warning above says it all)
        write_run_html(settings.report_dir, report, outputs.rejected, db_config, LOADED, outputs.rejections_path,
                       aggregates, keep_runs=settings.keep_runs)
    return result


def _publish(path: Path, report: dict[str, Any]) -> Optional[OSError]:
    """Rewrite the report after COMMIT; if that fails, remove it (saying ``not_loaded``, it would lie)."""
    try:
        _write_json(path, report)
    except OSError as exc:
        with suppress(OSError):
            Path(path).unlink()
        return exc
    return None


def build_report(run_id: str, settings: EtlSettings, sheets: dict[str, SheetData],
                 results: dict[str, clean.CleanResult], inputs: dict[str, InputFile], digests: dict[str, str],
                 loaded_doctors: Optional[np.ndarray] = None) -> dict[str, Any]:
    """The content of ``quality_report.json`` (load status filled in later); ``digests``: entity ->
    the input's SHA-256; ``loaded_doctors`` (merge): the doctors ``referential_integrity`` also knew."""
    terms = settings.quality_contract()
    metrics = quality.compute_metrics(results["appointments"], terms)
    file_doctors = results["doctors"].valid["id"].to_numpy()
    known: dict[str, int] = {"in_file": len(file_doctors)}
    known_ids = file_doctors if loaded_doctors is None else np.union1d(file_doctors, loaded_doctors)
    basis = "doctors_in_file" if loaded_doctors is None else "doctors_in_file_and_database"
    if loaded_doctors is not None:
        known.update(in_database=len(loaded_doctors), total=len(known_ids))
    metrics["referential_integrity"].update(basis=basis, known_doctors=known)
    columns, checks = profile.profile_and_checks({entity: sheet.frame for entity, sheet in sheets.items()}, results,
                                                 terms.checks, settings.day_first)
    report = {
        "run_id": run_id, "as_of": settings.as_of.isoformat(), "mode": settings.mode, "source": settings.source,
        "export_date": (settings.export_date or date.today()).isoformat(),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": quality.overall_status(metrics, checks), "load_status": "not_loaded", "metrics": metrics,
        "counts": {entity: {
            "read": int(result.stats["read"]), "loaded": len(result.valid), "rejected": len(result.rejected),
            "blank_rows_skipped": sheets[entity].blank_rows,
            "rows_above_header_skipped": sheets[entity].skipped_header_rows,
            "control_characters_removed": int(result.stats.get(CONTROL_CHARACTERS, 0)),
            "unreadable_rows": len(sheets[entity].unreadable),
        } for entity, result in results.items()},
        "rejections": clean.reason_counts(*results.values()),
        "unknown_status_values": results["appointments"].unknown_statuses,
        "inputs": {entity: {"file": source.display_name, "sha256": digests[entity], "reader": sheets[entity].reader,
                            "ignored_columns": sheets[entity].extra_columns} for entity, source in inputs.items()},
        "settings": {"day_first": settings.day_first, "horizon_days": settings.horizon_days,
                     "fail_on": settings.fail_on, "mode": settings.mode},
        "contract": terms.describe(), "checks": checks,
        "offending": offending.offending_values({entity: result.rejected for entity, result in results.items()},
                                                known_ids, basis, settings.as_of, settings.horizon_days,
                                                settings.day_first),
        "profile": columns,
    }
    report["verdict"] = quality.verdict(report)
    return report


def write_outputs(report_dir: Path, report: dict[str, Any], rejected: dict[str, pd.DataFrame],
                  source_files: dict[str, str]) -> _Outputs:
    """``quality_report.json`` under ``report_dir``, and ``rejected_rows.csv`` (formula-escaped)
    in a thread beside the load: :meth:`_Outputs.rejections_ready` waits for it before COMMIT."""
    from .csv_export import write_frame_csv

    report_path = make_output_dir(Path(report_dir), "--report-dir") / REPORT_FILE
    _write_json(report_path, report)
    with suppress(FileNotFoundError):  # an earlier run's page must not pass for this one (if interrupted)
        report_path.with_name(HTML_FILE).unlink()
    frames = [frame.assign(source_file=source_files[entity]) for entity, frame in rejected.items()]
    combined = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
    leading = [ENTITY, "source_file", SOURCE_ROW, RECORD_ID, REASONS]
    combined = combined[leading + [c for c in combined if c not in leading]].rename(columns={SOURCE_ROW: "row_number"})
    rejections_path = report_path.with_name(REJECTIONS_FILE)
    written = _in_background(lambda: write_atomically(rejections_path, lambda tmp: write_frame_csv(tmp, combined)))
    return _Outputs(report, report_path, rejections_path, rejected, written, report_dir)


def _in_background(call: Callable[[], Any]) -> "Future[Any]":
    """``call`` in a daemon thread (an interrupted run does not wait for it at exit); ``result()``
    re-raises its exception in the caller's thread."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="in-background", daemon=True).start()
    return future


def log_rejections(rejected: dict[str, pd.DataFrame]) -> None:
    """One log line per rejected record: entity, row number, id and reason codes only."""
    for entity, frame in rejected.items():
        ids = frame[RECORD_ID].astype(object).where(frame[RECORD_ID].notna(), "-").tolist()
        # One comprehension: pandas' element-wise string concatenation cost five passes.
        log_lines(rejections_logger, logging.WARNING, [f"rejected {entity} row={row} id={record} reasons={codes}"
                  for row, record, codes in zip(frame[SOURCE_ROW].tolist(), ids, frame[REASONS].tolist())])


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomically (tmp + rename): never half-written, no tmp file left behind. A report's verdict is
    refreshed first: it follows the load status."""
    if "load_status" in payload:
        payload["verdict"] = quality.verdict(payload)
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
