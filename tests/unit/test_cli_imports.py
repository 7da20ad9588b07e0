"""The commands that only read the run history (``runs``, ``rejections``, ``report``) and ``db``
start without pandas or numpy (a third of a second at each start: benchmarks/cli_latency.py), so
the modules they import must not import them at module level; the ETL itself still does."""

import subprocess
import sys

HEAVY = ("pandas", "numpy", "pyarrow", "openpyxl", "python_calamine")


def imported_after(*modules: str) -> list:
    code = (f"import sys\nfor name in {modules!r}: __import__(name)\n"
            f"print(' '.join(sorted(name for name in {HEAVY!r} if name in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.split()


def test_the_history_commands_and_db_import_no_dataframe_library():
    assert imported_after("healthtech_etl.cli", "healthtech_etl.history_commands", "healthtech_etl.history",
                          "healthtech_etl.queries", "healthtech_etl.html_report", "healthtech_etl.embedded",
                          "healthtech_etl.embedded_watchdog") == []


def test_the_etl_does():  # (the check above can fail)
    assert "pandas" in imported_after("healthtech_etl.pipeline")
