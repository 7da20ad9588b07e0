"""The quality contract: per metric a warning and a critical level, and optional column checks, read
from a TOML file (``quality.toml``, or the ``[tool.healthtech-etl.quality]`` table of a
``pyproject.toml``) and recorded with the run. Without a file: :data:`DEFAULT_METRICS`, which the
repository's ``quality.toml`` repeats. A mistake in the file is one :class:`ConfigError` line naming
the key and its line. Plain Python (the CLI loads it before pandas)."""

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Optional, Union

from .errors import ConfigError
from .schema import APPOINTMENT_COLUMNS, DOCTOR_COLUMNS

DEFAULT_SOURCE = "built-in defaults"
LEVELS = ("warning", "critical")
OFF = "off"  # a level switched off (TOML has no null)
ID_COLUMNS = ("booking_id", "patient_id", "doctor_id")
DATE_COLUMNS = ("booking_date",)
SHEET_COLUMNS = {"doctors": DOCTOR_COLUMNS, "appointments": APPOINTMENT_COLUMNS}


@dataclass(frozen=True)
class MetricLevels:
    key: str
    description: str
    alert_below: bool  # True: alert when the value is below a level; False: above it
    warning: Optional[float]
    critical: Optional[float]


# Proportionate: a handful of missing ids in a thousand rows is a warning, a third of the file
# rejected is critical.
DEFAULT_METRICS = (
    MetricLevels("id_completeness", "% of rows whose patient_id and doctor_id are both present and valid",
                 True, 100.0, 95.0),
    MetricLevels("referential_integrity", "% of rows with a valid doctor_id whose doctor exists", True, 95.0, 90.0),
    MetricLevels("duplicate_rate", "% of rows removed as exact duplicates", False, 5.0, 20.0),
    MetricLevels("typing_success", "% of non-empty booking_date values parsed into a date", True, 100.0, 95.0),
    # Every other metric can be perfect while nothing is loaded (all dates out of range, ...).
    MetricLevels("acceptance_rate", "% of appointment rows read that were loaded", True, 90.0, 75.0),
)


@dataclass(frozen=True)
class Check:
    """``range`` (``low``..``high``: ids or dates, inclusive) or ``required_share`` (% of rows read
    whose cell is present and valid); ``level``: the status when it fails."""

    entity: str
    column: str
    kind: str
    level: str = "warning"
    low: Any = None
    high: Any = None
    share: Optional[float] = None

    def expected(self) -> str:
        return f"{self.low} .. {self.high}" if self.kind == "range" else f">= {self.share:g} %"

    def describe(self) -> dict[str, Any]:
        as_json = str if self.column in DATE_COLUMNS else int
        bound = {"range": [as_json(self.low), as_json(self.high)]} if self.kind == "range" else \
            {"required_share": self.share}
        return {"entity": self.entity, "column": self.column, **bound, "level": self.level}


@dataclass(frozen=True)
class Contract:
    metrics: tuple[MetricLevels, ...] = DEFAULT_METRICS
    checks: tuple[Check, ...] = ()
    source: str = DEFAULT_SOURCE
    sha256: Optional[str] = None

    def describe(self) -> dict[str, Any]:
        """``report["contract"]``."""
        return {"source": self.source, "sha256": self.sha256,
                "metrics": {m.key: {"warning": m.warning, "critical": m.critical,
                                    "alert_when": "below" if m.alert_below else "above"} for m in self.metrics},
                "checks": [check.describe() for check in self.checks]}


class _Bad(Exception):
    def __init__(self, path: list[Any], message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def _toml() -> Any:
    try:
        import tomllib
    except ImportError:  # Python < 3.11 (AWS Glue: 3.9)
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("quality contracts need Python 3.11+ or the tomli package (pip install tomli); "
                              "without --contract the built-in thresholds apply") from None
    return tomllib


def load(path: Optional[Union[str, Path]]) -> Contract:
    """The contract in ``path`` (``None``: the built-in defaults); :class:`ConfigError` when it is bad."""
    if path is None:
        return Contract()
    path = Path(path)
    tomllib = _toml()
    where = f"quality contract {path}"
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the {where}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    prefix: list[Any] = ["tool", "healthtech-etl", "quality"] if path.name == "pyproject.toml" else []
    for key in prefix:
        table = table.get(key) if isinstance(table, dict) else None
    if not isinstance(table, dict):
        raise ConfigError(f"{where} has no [tool.healthtech-etl.quality] table")
    try:
        metrics, checks = _parse(table)
    except _Bad as bad:
        full = prefix + bad.path
        key = "".join(f"[{part}]" if isinstance(part, int) else ("." if i else "") + part for i, part in enumerate(full))
        line = _line_of(text, full)
        raise ConfigError(f"{where}" + (f", line {line}" if line else "") + f": {key}: {bad.message}") from None
    return Contract(metrics, checks, str(path), hashlib.sha256(data).hexdigest())


def _parse(table: dict[str, Any]) -> tuple[tuple[MetricLevels, ...], tuple[Check, ...]]:
    _known_keys(table, [], ("metrics", "checks"))
    given = table.get("metrics", {})
    if not isinstance(given, dict):
        raise _Bad(["metrics"], "must be a table")
    _known_keys(given, ["metrics"], tuple(m.key for m in DEFAULT_METRICS))
    metrics = tuple(_metric(default, given.get(default.key)) for default in DEFAULT_METRICS)
    checks = table.get("checks", [])
    if not isinstance(checks, list) or not all(isinstance(check, dict) for check in checks):
        raise _Bad(["checks"], "must be an array of tables ([[checks]])")
    return metrics, tuple(_check(check, ["checks", index]) for index, check in enumerate(checks))


def _known_keys(table: dict[str, Any], path: list[Any], allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            raise _Bad(path + [key], f"unknown key (expected {', '.join(allowed)})")


def _metric(default: MetricLevels, given: Any) -> MetricLevels:
    path = ["metrics", default.key]
    if given is None:
        return default
    if not isinstance(given, dict):
        raise _Bad(path, "must be a table with warning and/or critical")
    _known_keys(given, path, LEVELS)
    levels = {name: _percent(given[name], path + [name], OFF) if name in given else getattr(default, name)
              for name in LEVELS}
    warning, critical = levels["warning"], levels["critical"]
    if warning is not None and critical is not None and (critical > warning if default.alert_below
                                                        else critical < warning):
        side = "above" if default.alert_below else "below"
        raise _Bad(path + ["critical"], f"{critical:g} is {side} the warning level {warning:g} "
                                        f"(this metric alerts when {'below' if default.alert_below else 'above'})")
    return MetricLevels(default.key, default.description, default.alert_below, warning, critical)


def _percent(value: Any, path: list[Any], off: Optional[str] = None) -> Optional[float]:
    if off is not None and value == off:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise _Bad(path, f"must be a percentage from 0 to 100{' or ' + repr(off) if off else ''} (got {value!r})")
    return float(value)


def _check(given: dict[str, Any], path: list[Any]) -> Check:
    _known_keys(given, path, ("entity", "column", "range", "required_share", "level"))
    entity, column, level = given.get("entity"), given.get("column"), given.get("level", "warning")
    if entity not in SHEET_COLUMNS:
        raise _Bad(path + ["entity"], f"must be one of {', '.join(SHEET_COLUMNS)} (got {entity!r})")
    if column not in SHEET_COLUMNS[entity]:
        raise _Bad(path + ["column"], f"must be a column of {entity}: {', '.join(SHEET_COLUMNS[entity])} "
                                      f"(got {column!r})")
    if level not in LEVELS:
        raise _Bad(path + ["level"], f"must be warning or critical (got {level!r})")
    if ("range" in given) == ("required_share" in given):
        raise _Bad(path, "needs exactly one of range and required_share")
    if "required_share" in given:
        return Check(entity, column, "required_share", level,
                     share=_percent(given["required_share"], path + ["required_share"]))
    bounds = given["range"]
    if column not in ID_COLUMNS + DATE_COLUMNS:
        raise _Bad(path + ["range"], f"applies to ids and booking_date, not {column}")
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise _Bad(path + ["range"], "must be [low, high]")
    low, high = (_bound(value, column, path + ["range"]) for value in bounds)
    if low > high:
        raise _Bad(path + ["range"], f"low {low} is above high {high}")
    return Check(entity, column, "range", level, low=low, high=high)


def _bound(value: Any, column: str, path: list[Any]) -> Any:
    if column in DATE_COLUMNS:
        if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        elif isinstance(value, date) and not isinstance(value, datetime):
            return value
        raise _Bad(path, f"bounds must be dates, YYYY-MM-DD (got {value!r})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(path, f"bounds must be whole numbers (got {value!r})")
    return value


def _line_of(text: str, path: list[Any]) -> Optional[int]:
    """Best effort: the line of the key ``path`` (table headers, ``[[array]]`` entries and dotted
    keys followed), or of the deepest part of it found (an inline table, the table of a missing key)."""
    best, best_depth = None, 0
    header: list[Any] = []
    arrays: dict[tuple[Any, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        found = re.match(r"^(\[\[?)\s*([^\]]+?)\s*\]\]?$", stripped)
        if found:
            header = _dotted(found.group(2))
            if found.group(1) == "[[":  # the n-th entry of an array of tables: [..., n]
                arrays[tuple(header)] = arrays.get(tuple(header), -1) + 1
                header.append(arrays[tuple(header)])
            candidate = header
        else:
            key = re.match(r"^([A-Za-z0-9_\-.\"' ]+?)\s*=", stripped)
            if not key:
                continue
            candidate = header + _dotted(key.group(1))
        depth = 0
        while depth < min(len(candidate), len(path)) and candidate[depth] == path[depth]:
            depth += 1
        if depth == len(path):
            return number
        if depth == len(candidate) and depth > best_depth:
            best, best_depth = number, depth
    return best


def _dotted(key: str) -> list[Any]:
    return [part.strip().strip("\"'") for part in key.split(".")]
