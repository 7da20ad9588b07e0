"""Logging setup: readable lines locally, JSON lines on AWS; a file log under ``log_dir``.

Logs carry row numbers, ids and reason codes - never whole records or credentials.
"""

import json
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

LOG_FILE_NAME = "etl_pipeline.log"
REJECTIONS_LOGGER = "healthtech_etl.rejections"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_MARK = "\x00HT-MESSAGE\x00"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ run_id when known)."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        run_id = getattr(record, "run_id", None)
        if run_id:
            payload["run_id"] = run_id
        if record.exc_info and record.exc_info[0] is not None:
            payload["error_type"] = record.exc_info[0].__name__
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(json_logs: bool = False, log_dir: Optional[Path] = None, level: str = "INFO") -> None:
    """(Re)configure the package's loggers; safe to call more than once."""
    package = logging.getLogger("healthtech_etl")
    for handler in list(package.handlers):
        package.removeHandler(handler)
        handler.close()
    package.setLevel(level.upper())
    package.propagate = False
    formatter: logging.Formatter = JsonFormatter() if json_logs else logging.Formatter(_TEXT_FORMAT)
    console = logging.StreamHandler(sys.stdout if json_logs else sys.stderr)
    console.setFormatter(formatter)
    # Records logged with extra={"console": False} go to the file only (the CLI prints its
    # own one-line error and must not say it twice).
    console.addFilter(lambda record: getattr(record, "console", True))
    if not json_logs:
        # Locally the console shows the summary; one line per rejected row goes to the file.
        console.addFilter(lambda record: not record.name.startswith(REJECTIONS_LOGGER))
        console.setLevel(logging.WARNING)
    package.addHandler(console)
    if log_dir is not None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_dir / LOG_FILE_NAME, encoding="utf-8")
        file_handler.setFormatter(formatter)
        package.addHandler(file_handler)


def log_lines(logger: logging.Logger, level: int, messages: Iterable[str]) -> int:
    """Log many messages, one line each, formatted exactly as ``logger.log`` would.

    Formatting a full LogRecord per rejected row costs ~20 us; for a million-row export this
    writes the same lines by formatting the prefix/suffix once per handler."""
    lines: list[str] = list(messages)
    if not lines or not logger.isEnabledFor(level):
        return 0
    record = logger.makeRecord(logger.name, level, "(bulk)", 0, _MARK, (), None)
    current: Optional[logging.Logger] = logger
    while current is not None:
        for handler in current.handlers:
            if record.levelno < handler.level or not handler.filter(record):
                continue
            if not isinstance(handler, logging.StreamHandler):
                for line in lines:
                    handler.handle(logger.makeRecord(logger.name, level, "(bulk)", 0, line, (), None))
                continue
            template = handler.format(record)
            escaped = json.dumps(_MARK)[1:-1]
            if _MARK in template:
                prefix, _, suffix = template.partition(_MARK)
                body = lines
            else:  # the formatter escaped the message (JSON)
                prefix, _, suffix = template.partition(escaped)
                body = [json.dumps(line, ensure_ascii=False)[1:-1] for line in lines]
            text = "".join(f"{prefix}{line}{suffix}{handler.terminator}" for line in body)
            handler.acquire()
            try:
                handler.stream.write(text)
                handler.flush()
            finally:
                handler.release()
        current = current.parent if current.propagate else None
    return len(lines)
