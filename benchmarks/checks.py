"""What the bench checks and concludes: the loaded tables against the runs' counts and against
each other, the medians over the repeats, and the targets (issue 17, with the earlier ones
that still hold)."""

import statistics
from typing import Optional

from common import GIB, MIB, REFERENCE_ORDER

GLUE_RSS_LIMIT = 800 * MIB


def check_counts(where: str, sample: dict, problems: list) -> bool:
    """The loaded tables hold what the run says it loaded."""
    tables = sample["tables"]
    if "report_counts" in sample:
        counts = sample["report_counts"]
        expected = {"doctors": counts["doctors"]["loaded"], "appointments": counts["appointments"]["loaded"],
                    "rejections": counts["doctors"]["rejected"] + counts["appointments"]["rejected"]}
    elif "loaded" in sample:
        expected = dict(sample["loaded"])
    else:
        return True
    fine = True
    for table, count in expected.items():
        if tables[table]["rows"] != count:
            fine = False
            problems.append(f"{where}: {table} holds {tables[table]['rows']:,} rows, the run reported {count:,}")
    return fine


def reference_name(states: dict) -> Optional[str]:
    """The line the others are compared with: the project's, else the first that ran."""
    return next((name for name in REFERENCE_ORDER if name in states), None)


def verify(where: str, states: dict, problems: list) -> dict:
    """Every loading line loaded the same doctors and appointments as the reference line (the
    project's; the CLI lines also the same rejections)."""
    reference = reference_name(states)
    result: dict = {"reference": reference}
    if reference is None:
        return result
    for name, state in states.items():
        if name == reference:
            continue
        cli = name in ("project", "glue") and reference in ("project", "glue")
        tables = ("doctors", "appointments", "rejections") if cli else ("doctors", "appointments")
        same = {table: state[table] == states[reference][table] for table in tables}
        result[name] = same
        for table, equal in same.items():
            if not equal:
                problems.append(f"{where}: {name} loaded different {table} than {reference} "
                                f"({state[table]} vs {states[reference][table]})")
    return result


def summarize(runs: list, read_rows: Optional[int]) -> dict:
    """Medians over a line's successful runs; ``timings``: those of the run nearest the median
    wall time (a consistent breakdown), ``read_stage``: the median of the read stage."""
    good = [run for run in runs if run["exit_code"] == 0]
    if not good:
        return {"failed": True}
    walls = sorted(run["wall"] for run in good)
    wall = statistics.median(walls)
    median_run = min(good, key=lambda run: abs(run["wall"] - wall))
    rows = read_rows or median_run.get("read")
    reads = [run["timings"]["read"] for run in good if "read" in run.get("timings", {})]
    return {
        "wall": round(wall, 3),
        "walls": walls,
        "rows_per_second": round(rows / wall) if rows else None,
        "peak_rss": max(run["peak_rss"] for run in good),
        "timings": median_run.get("timings", {}),
        "read_stage": round(statistics.median(reads), 3) if reads else None,
    }


def targets(kind: str, lines: dict) -> list:
    """The targets on one file's medians (they apply at 1,000,000 rows)."""
    def get(name: str, key: str) -> Optional[float]:
        line = lines.get(name) or {}
        return None if line.get("failed") else line.get(key)

    checks: list = []

    def add(text: str, numerator: Optional[float], denominator: Optional[float], limit: float,
            at_least: bool = False) -> None:
        if numerator and denominator:
            ratio = numerator / denominator
            met = ratio >= limit if at_least else ratio <= limit
            checks.append({"file": kind, "target": text, "value": round(ratio, 3), "met": met,
                           "shown": f"{ratio:.2f}x"})

    project = get("project", "wall")
    add("read stage within 1.25x of a bare python-calamine read", get("project", "read_stage"),
        get("calamine-bare", "read_stage"), 1.25)
    add("whole run within 1.75x of the limit line", project, get("limit", "wall"), 1.75)
    seed_factor = 15 if kind == "messy" else 10
    add(f"at least {seed_factor}x faster than the seed-style line", get("seed", "wall"), project, seed_factor,
        at_least=True)
    add("faster than the awswrangler line", get("awswrangler", "wall"), project, 1, at_least=True)
    add("Glue path within 1.5x of the local run", get("glue", "wall"), project, 1.5)
    for name, limit, text in (("glue", GLUE_RSS_LIMIT, "Glue path peak RSS under 800 MiB"),
                              ("project", GIB, "local peak RSS at most 1 GiB")):
        rss = get(name, "peak_rss")
        if rss:
            checks.append({"file": kind, "target": text, "value": rss, "met": rss < limit if name == "glue"
                           else rss <= limit, "shown": f"{rss / MIB:.0f} MiB"})
    add("merge into as many held rows within 2x of the replace run", get("merge", "wall"), project, 2)
    add("merge peak RSS no more than 10% above the replace run's", get("merge", "peak_rss"),
        get("project", "peak_rss"), 1.10)
    return checks
