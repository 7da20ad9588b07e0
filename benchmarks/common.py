"""What every part of the bench shares: paths, the lines, the files, the fixed settings."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("healthtech-etl"))
DEFAULT_ROWS = (100_000, 1_000_000)
TARGET_ROWS = 1_000_000
AS_OF = "2025-11-01"  # fixed: the samples' dates are Sept-Dec 2025, so every run rejects the same rows
DATABASE = "healthtech_bench"
MIB = 2 ** 20
GIB = 2 ** 30
TIMEOUT = 1800

# The Python 3.9 stand-in for AWS Glue Python shell: scripts/test-compat.sh's glue lane venv
# (Glue's library set) and the --target directory the package, python-calamine and packaging
# are installed into from dist/glue, as Glue's launcher installs --extra-py-files wheels.
GLUE_PYTHON = ROOT / ".venv-compat" / "bin" / "python"
GLUE_LIBS = ROOT / ".venv-compat" / "glue-python-libs"

# The input files: "clean" is the project's own sample generator (src/healthtech_etl/sample.py:
# mixed cell types, date cells and serials, ~4 % defects); "messy" is benchmarks/messy.py (title
# rows, text dates, a free-text column, shared strings, ~3 % defects).
FILES = ("clean", "messy")


class Line:
    """One benchmark line: its label, default repeats, the files it runs on, and how it loads."""

    def __init__(self, label: str, repeats: int, files: tuple = FILES, loads: bool = True,
                 needs_clean_rows: bool = False) -> None:
        self.label, self.repeats, self.files = label, repeats, files
        self.loads = loads  # fills the tables (checked against the project's)
        self.needs_clean_rows = needs_clean_rows  # COPYs the clean rows exported after a loading line


# name -> Line; runs of a file's lines are interleaved, medians over the repeats.
LINES = {
    "project": Line("this project: healthtech-etl etl", 3),
    "limit": Line("limit: bare calamine parse + server-side COPY", 3, needs_clean_rows=True),
    "calamine-bare": Line("bare python-calamine read (to_python)", 3, loads=False),
    "glue": Line("Glue path: etl on Python 3.9 + Glue's libraries", 2),
    "seed": Line("seed-style: read_excel + clean + pandas to_sql", 1),
    "awswrangler": Line("read_excel + clean + awswrangler to_sql", 1, files=("clean",)),
    "merge": Line("merge mode: etl --mode merge into as many held rows", 2, files=("clean",), needs_clean_rows=True),
}
# The lines whose run writes a quality report (the CLI); the others print one JSON line.
CLI_LINES = ("project", "glue", "merge")
# Which line's tables the others are checked against, when the project line did not run.
REFERENCE_ORDER = ("project", "glue", "seed", "awswrangler")
