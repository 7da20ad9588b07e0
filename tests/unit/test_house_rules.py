"""The house rules a newcomer relies on, checked on every run: small modules and functions, no
import cycles, no process tricks in the library, and src/ within its line budget."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "src", ROOT / "glue_job", ROOT / "lambda", ROOT / "infra" / "healthtech_infra"]
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_SRC_LINES = 500, 80, 7200


def modules():
    for folder in SHIPPED:
        yield from sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("path", list(modules()), ids=lambda path: str(path.relative_to(ROOT)))
def test_modules_and_functions_are_small(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long


def test_src_stays_within_its_line_budget():
    total = sum(len(path.read_text(encoding="utf-8").splitlines()) for path in (ROOT / "src").rglob("*.py"))
    assert total <= MAX_SRC_LINES


def test_no_import_cycles():
    grimp = pytest.importorskip("grimp")  # (no release for Python 3.9: checked in the dev lane)
    graph = grimp.build_graph("healthtech_etl")
    names = sorted(graph.modules)
    cycles = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
              if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)]
    assert not cycles


TRICKS = re.compile(r"os\._exit|os\.fork\(|setswitchinterval|RLIMIT_|prctl|\._sock\b|_set_madvise|gc\.disable")


@pytest.mark.parametrize("path", [path for path in modules() if "infra" not in path.parts],
                         ids=lambda path: str(path.relative_to(ROOT)))
def test_no_process_tricks(path):
    assert not TRICKS.findall(path.read_text(encoding="utf-8"))
