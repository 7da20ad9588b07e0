"""Logging setup: readable lines locally, JSON lines on AWS; a size-rotated file log under ``log_dir``.

Every formatted line goes through :func:`healthtech_etl.redact.redact`. A log file that cannot be
written (full disk) costs one warning on stderr, never a traceback or the run.
"""

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from .errors import ConfigError
from .paths import describe_os_error, make_output_dir
from .redact import redact

LOG_FILE_NAME = "etl_pipeline.log"
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 5
REJECTIONS_LOGGER = "healthtech_etl.rejections"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_MARK = "\x00HT-MESSAGE\x00"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ error_type)."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                   "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info and record.exc_info[0] is not None:
            payload["error_type"] = record.exc_info[0].__name__
        return redact(json.dumps(payload, ensure_ascii=False))


class RedactingFormatter(logging.Formatter):
    """The text format, with credentials masked (tracebacks included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RotatingLogFile(logging.handlers.RotatingFileHandler):
    """Size-rotated log file that reports a write failure once on stderr instead of a traceback."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        error = sys.exc_info()[1]
        self.report_failure(error if isinstance(error, OSError) else None)

    def report_failure(self, error: Optional[OSError]) -> None:
        if not self.failed:
            self.failed = True
            reason = describe_os_error(error) if error is not None else "write failed"
            print(f"healthtech-etl: warning: cannot write the log file {self.baseFilename}: {reason}", file=sys.stderr)


def configure_logging(json_logs: bool = False, log_dir: Optional[Path] = None, level: str = "INFO",
                      max_bytes: int = DEFAULT_LOG_MAX_BYTES, backups: int = DEFAULT_LOG_BACKUPS) -> None:
    """(Re)configure the package's loggers; ``log_dir``: ``etl_pipeline.log`` there, rotated at
    ``max_bytes`` (0: never) keeping ``backups`` files. ConfigError if the file cannot be opened."""
    package = logging.getLogger("healthtech_etl")
    for handler in list(package.handlers):
        package.removeHandler(handler)
        handler.close()
    package.setLevel(level.upper())
    package.propagate = False
    formatter: logging.Formatter = JsonFormatter() if json_logs else RedactingFormatter(_TEXT_FORMAT)
    console = logging.StreamHandler(sys.stdout if json_logs else sys.stderr)
    console.setFormatter(formatter)
    # Records logged with extra={"console": False} go to the file only (the CLI prints its own error).
    console.addFilter(lambda record: getattr(record, "console", True))
    if not json_logs:
        # Locally the console shows the summary; one line per rejected row goes to the file.
        console.addFilter(lambda record: not record.name.startswith(REJECTIONS_LOGGER))
        console.setLevel(logging.WARNING)
    package.addHandler(console)
    if log_dir is not None:
        log_dir = make_output_dir(Path(log_dir), "--log-dir")
        try:
            file_handler = RotatingLogFile(log_dir / LOG_FILE_NAME, maxBytes=max(0, max_bytes),
                                           backupCount=max(0, backups), encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot open the log file {log_dir / LOG_FILE_NAME}: {describe_os_error(exc)}") from exc
        file_handler.setFormatter(formatter)
        package.addHandler(file_handler)


def log_lines(logger: logging.Logger, level: int, messages: Iterable[str]) -> int:
    """Log many messages, one line each, exactly as ``logger.log`` would, formatting the prefix and
    suffix once per handler (a LogRecord per rejected row costs ~20 us)."""
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
            if _MARK in template:
                prefix, _, suffix = template.partition(_MARK)
                body = lines
            else:  # the formatter escaped the message (JSON)
                prefix, _, suffix = template.partition(json.dumps(_MARK)[1:-1])
                body = [json.dumps(line, ensure_ascii=False)[1:-1] for line in lines]
            pieces = [f"{prefix}{line}{suffix}{handler.terminator}" for line in body]
            handler.acquire()
            try:
                if isinstance(handler, logging.handlers.RotatingFileHandler):
                    _write_rotating(handler, pieces)
                else:
                    handler.stream.write("".join(pieces))
                    handler.flush()
            except OSError as exc:
                if isinstance(handler, RotatingLogFile):
                    handler.report_failure(exc)
                else:
                    raise
            finally:
                handler.release()
        current = current.parent if current.propagate else None
    return len(lines)


def _write_rotating(handler: logging.handlers.RotatingFileHandler, pieces: list[str]) -> None:
    """Write pre-formatted lines, rolling the file over whenever it would exceed ``maxBytes``."""
    if handler.stream is None:
        handler.stream = handler._open()
    limit = handler.maxBytes
    if limit <= 0:
        handler.stream.write("".join(pieces))
        handler.flush()
        return
    position = handler.stream.tell()
    batch: list[str] = []
    size = 0
    for piece in pieces:
        length = len(piece)  # characters ~ bytes for these ASCII lines
        if position + size + length > limit and (batch or position):
            handler.stream.write("".join(batch))
            handler.doRollover()
            position, batch, size = 0, [], 0
        batch.append(piece)
        size += length
    handler.stream.write("".join(batch))
    handler.flush()
