"""The bench's results as Markdown (bench.md) and a chart (bench.png), and the machine they
were measured on."""

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from common import GIB, LINES, MIB, ROOT, TARGET_ROWS

FILE_NOTES = {
    "clean": "the project's sample generator: numbers, date cells and serials, inline strings",
    "messy": "benchmarks/messy.py: title rows, text dates, a free-text notes column, shared strings, ~3 % defects",
}


def machine_info(config: Any) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    from healthtech_etl.db import connect

    packages = {}
    for package in ("pandas", "numpy", "pyarrow", "python-calamine", "openpyxl", "pg8000", "SQLAlchemy", "psycopg",
                    "awswrangler", "xlsxwriter"):
        try:
            packages[package] = version(package)
        except PackageNotFoundError:
            packages[package] = None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    connection = connect(config)
    try:
        server = connection.run("SHOW server_version")[0][0]
    finally:
        connection.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True).stdout
    return {
        "cpu": cpu, "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "platform": platform.platform(), "python": platform.python_version(), "packages": packages,
        "postgresql": f"{server} (embedded, unix socket)", "git_commit": commit.strip() + ("+dirty" if dirty else ""),
    }


def render_markdown(result: dict) -> str:
    machine = result["machine"]
    runs: dict = {}
    for size in result["sizes"]:
        for found in size["files"].values():
            for name, samples in found["samples"].items():
                runs[name] = max(runs.get(name, 0), len(samples))
    out = [f"Measured {result['generated_at'][:10]} on {machine['cores']} cores ({machine['cpu']}), "
           f"{machine['memory_gib']} GiB, Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
           f"python-calamine {machine['packages'].get('python-calamine')}. Each run in its own process, wall time "
           "from process start to exit (after COMMIT), peak RSS of the process and its children (the larger of "
           "wait4's and their sampled sum); median of "
           + ", ".join(f"{count} {name}" for name, count in runs.items()) + " runs.", ""]
    if result.get("glue"):
        out += [f"Glue path: {result['glue']}.", ""]
    for name, why in result.get("skipped", {}).items():
        out += [f"**{name} line not run**: {why}", ""]
    for size in result["sizes"]:
        for kind, found in size["files"].items():
            out += render_file(size["rows"], kind, found)
        out += render_targets(size)
    if result["problems"]:
        out += ["Problems: " + "; ".join(result["problems"]), ""]
    return "\n".join(out)


def render_file(rows: int, kind: str, found: dict) -> list:
    lines = found["lines"]
    project = (lines.get("project") or {}).get("wall")
    read = found.get("appointment_rows_read")
    out = [f"**{rows:,} appointment rows, {kind} file** ({f'{read:,} read, ' if read else ''}"
           f"{found['files']['appointments_bytes'] / 1e6:.0f} MB xlsx; {FILE_NOTES.get(kind, kind)})", "",
           "| line | wall (s) | rows/s | peak RSS (MiB) | read / clean / load (s) | vs project |",
           "|---|---:|---:|---:|---|---:|"]
    for name, line_spec in LINES.items():
        line = lines.get(name)
        if not line or line.get("failed"):
            continue
        stages = " / ".join(f"{line['timings'][key]:.2f}" if key in line["timings"] else "-"
                            for key in ("read", "clean", "load"))
        ratio = "1.00x" if name == "project" else f"{line['wall'] / project:.2f}x" if project else "-"
        out.append(f"| {line_spec.label} | {line['wall']:.2f} | {line['rows_per_second'] or 0:,} | "
                   f"{line['peak_rss'] / MIB:.0f} | {stages} | {ratio} |")
    out.append("")
    drivers = {sample.get("driver") for sample in found["samples"].get("seed", []) if sample.get("driver")}
    if drivers:
        out += [f"Seed-style load: DataFrame.to_sql through SQLAlchemy with {', '.join(sorted(drivers))}"
                + (" (multi-row INSERTs)." if "psycopg" in drivers else " (method='multi')."), ""]
    verification = found["verification"]
    compared = {name: same for name, same in verification.items() if name != "reference"}
    if compared:
        out += [f"Same tables as the {verification['reference']} line (row count + md5): "
                + ", ".join(f"{name} {'yes' if all(same.values()) else '**NO**'}" for name, same in compared.items())
                + ".", ""]
    merges = [sample["merge_check"] for sample in found["samples"].get("merge", []) if "merge_check" in sample]
    if merges:
        check = merges[0]
        passed = all(all(merge["checks"].values()) for merge in merges)
        out += [f"Merge line: into the previous month's {check['held'] - check['new']:,} rows, "
                f"{check['new']:,} new ids and {check['changed']:,} changed rows; tables and history "
                f"checked against the expected union: {'yes' if passed else '**NO**'}.", ""]
    return out


def render_targets(size: dict) -> list:
    if not size["targets"]:
        return []
    at = "1M rows" if size["rows"] == TARGET_ROWS else f"{size['rows']:,} rows: for information, they apply at 1M"
    out = [f"| target ({at}) | file | measured | met |", "|---|---|---:|:---:|"]
    for check in size["targets"]:
        out.append(f"| {check['target']} | {check['file']} | {check['shown']} | {'yes' if check['met'] else '**no**'} |")
    return out + [""]


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(size["rows"], kind, found) for size in result["sizes"] for kind, found in size["files"].items()
              if any(not line.get("failed") for line in found["lines"].values())]
    if not panels:
        return
    counts = [len(found["lines"]) for _, _, found in panels]
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 0.6 + sum(0.8 + 0.42 * n for n in counts)),
                                squeeze=False, gridspec_kw={"height_ratios": [n + 1 for n in counts]})
    colors = {"read": "#4c72b0", "clean": "#dd8452", "load": "#55a868", "other": "#c8c8c8"}
    for axis, (rows, kind, found) in zip(axes[:, 0], panels):
        names = [name for name in LINES if name in found["lines"] and not found["lines"][name].get("failed")]
        for position, name in enumerate(reversed(names)):
            line = found["lines"][name]
            left = 0.0
            for stage in ("read", "clean", "load"):
                value = line["timings"].get(stage)
                if value:
                    axis.barh(position, value, left=left, color=colors[stage], label=stage)
                    left += value
            axis.barh(position, max(line["wall"] - left, 0), left=left, color=colors["other"], label="other")
            axis.text(line["wall"], position, f"  {line['wall']:.1f} s, {line['peak_rss'] / MIB:.0f} MiB",
                      va="center", fontsize=8)
        axis.set_yticks(range(len(names)))
        axis.set_yticklabels([LINES[name].label for name in reversed(names)], fontsize=8)
        axis.set_xlabel("wall time, process start to exit (s)")
        axis.set_title(f"{rows:,} appointment rows, {kind} file", fontsize=10)
        axis.set_xlim(0, max(found["lines"][name]["wall"] for name in names) * 1.3)
        handles = dict(zip(*reversed(axis.get_legend_handles_labels())))
        order = [stage for stage in colors if stage in handles]
        axis.legend([handles[stage] for stage in order], order, fontsize=7, loc="upper right")
    figure.suptitle(f"healthtech-etl bench ({result['generated_at'][:10]}, {result['machine']['cores']} cores)",
                    fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
