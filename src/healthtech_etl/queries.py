"""Answer the business questions: run every ``sql/*.sql`` file, print and save the results."""

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Optional

from .csv_export import write_csv
from .db import DbConfig, _short, connect
from .errors import ConfigError, DatabaseError


@dataclass
class QueryResult:
    name: str
    columns: list[str]
    rows: list[list[Any]]
    csv_path: Optional[Path] = None


def sql_dir() -> Path:
    """The query folder: inside the installed wheel, else the source checkout's ``sql/``."""
    for candidate in (Path(__file__).resolve().parent / "sql", Path(__file__).resolve().parents[2] / "sql"):
        if any(candidate.glob("*.sql")):
            return candidate
    raise ConfigError("cannot find the business queries (sql/*.sql)")


def list_queries() -> list[Path]:
    return sorted(sql_dir().glob("*.sql"))


def run_queries(db_config: DbConfig, out_dir: Optional[Path] = None) -> list[QueryResult]:
    """Run each query read-only; save ``<out_dir>/<query>.csv`` when ``out_dir`` is given."""
    results = []
    with closing(connect(db_config)) as connection:
        connection.run("START TRANSACTION READ ONLY")
        for path in list_queries():
            try:
                rows = connection.run(path.read_text(encoding="utf-8"))
            except Exception as exc:
                raise DatabaseError(f"query {path.name} failed: {_short(exc)} (has the ETL run yet?)") from exc
            columns = [column["name"] for column in connection.columns or []]
            result = QueryResult(path.stem, columns, [list(row) for row in rows or []])
            if out_dir is not None:
                result.csv_path = write_csv(Path(out_dir) / f"{path.stem}.csv", columns, result.rows)
            results.append(result)
        connection.run("COMMIT")
    return results


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table (numbers right-aligned)."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [len(name) for name in columns]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    numeric = [bool(rows) and all(_is_number(row[i]) for row in rows) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    if not rows:
        out.append("(no rows)")
    return "\n".join(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
