"""``quality_report.html`` of the run that just happened, beside quality_report.json; after a load
the run's snapshot is stored for ``healthtech-etl report``. Best effort: a problem is only logged."""

import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from .aggregates import frame_aggregates
from .db import DbConfig, _short
from .html_report import HTML_FILE, REJECTED_ROWS_SHOWN, ReportPage, write_html
from .load import DEFAULT_KEEP_RUNS
from .schema import ENTITY, REASONS, RECORD_ID, SOURCE_ROW

logger = logging.getLogger(__name__)

LOADED, GATE, FAILED = "loaded", "gate", "failed"


def write_run_html(report_dir: Path, report: dict[str, Any], rejected: dict[str, pd.DataFrame], db_config: DbConfig,
                   outcome: str, rejections_file: Optional[Path] = None,
                   aggregates: Optional["Future[dict[str, Any]]"] = None,
                   keep_runs: int = DEFAULT_KEEP_RUNS) -> Optional[Path]:
    """Write ``report_dir/quality_report.html`` for a run that ``outcome`` = loaded / gate / failed;
    ``aggregates``: :func:`aggregate_in_background` of what was loaded. None when not written (logged)."""
    clock = time.perf_counter()
    try:
        page = ReportPage(
            report=report, rejected_rows=first_rejected_rows(rejected),
            rejected_total=sum(len(frame) for frame in rejected.values()),
            # By name: the page travels (S3, e-mail) with the CSV beside it, not with this machine's path.
            rejections_csv=f"{Path(rejections_file).name} (beside this report)" if rejections_file else "",
            rejections_href=Path(rejections_file).name if rejections_file else "",
        )
        if outcome == LOADED and aggregates is not None:
            page.aggregates = aggregates.result()
        _add_database_parts(page, db_config, outcome, keep_runs)
        path = write_html(Path(report_dir) / HTML_FILE, page)
    except Exception as exc:  # the report is a view of the run, never a reason to fail it
        stale = Path(report_dir) / HTML_FILE
        if stale.is_file():  # an earlier run's page must not pass for this run's
            stale.unlink()
        logger.warning("quality_report.html not written: %s: %s", type(exc).__name__, _short(exc))
        return None
    logger.info("HTML report %s written in %.2f s", path, time.perf_counter() - clock)
    return path


def _add_database_parts(page: ReportPage, db_config: DbConfig, outcome: str, keep_runs: int) -> None:
    from . import history

    if outcome == LOADED:
        try:
            page.trends = history.save_run_snapshot(db_config, page.report, page.aggregates, keep_runs)
        except Exception as exc:  # the page can still be written from memory
            page.notes.append("Run history not shown: the database could not be read after the load.")
            logger.warning("HTML report: snapshot not stored / history not read: %s", _short(exc))
    elif outcome == GATE:
        fail_on = (page.report.get("settings") or {}).get("fail_on", "?")
        page.loaded_note = f"the quality gate (--fail-on {fail_on}) stopped the run before loading"
        page.trends = history.read_trends_quietly(db_config, page.report.get("source"))
    else:
        page.loaded_note = "the load failed and was rolled back; the tables keep the previous data"
        page.notes.append("Run history not shown: the database failed during this run.")


def aggregate_in_background(doctors: pd.DataFrame, appointments: pd.DataFrame) -> "Future[dict[str, Any]]":
    """:func:`frame_aggregates` of the rows about to be loaded, in a worker thread during the load."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healthtech-aggregates")
    try:
        return executor.submit(frame_aggregates, doctors, appointments)
    finally:
        executor.shutdown(wait=False)  # the thread ends with its one task


def first_rejected_rows(rejected: dict[str, pd.DataFrame], limit: int = REJECTED_ROWS_SHOWN) -> list[dict[str, Any]]:
    """The first ``limit`` rejected rows (doctors first, then by row number), as the page shows them."""
    rows: list[dict[str, Any]] = []
    for entity in sorted(rejected, reverse=True):  # "doctors" before "appointments", as in the database
        frame = rejected[entity]
        if len(rows) >= limit or frame is None or frame.empty:
            continue
        head = frame.sort_values(SOURCE_ROW, kind="stable").head(limit - len(rows))
        raw_columns = [c for c in head.columns if c not in (ENTITY, SOURCE_ROW, RECORD_ID, REASONS)]
        for record in head.to_dict("records"):
            rows.append({"entity": record.get(ENTITY, entity), "row_number": int(record[SOURCE_ROW]),
                         "record_id": _plain(record.get(RECORD_ID)),
                         "reasons": str(record.get(REASONS) or "").split(";"),
                         "raw": {column: _plain(record.get(column)) for column in raw_columns}})
    return rows


def _plain(value: Any) -> Any:
    """NaN / NA / None -> None; numpy scalars -> Python ones."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value
