"""Every example command in README.md runs as shown (against the test database, in a scratch
folder holding a copy of the bundled sample). ``make <target> ARGS="..."`` is expanded with the
target's own recipe from the Makefile, so the test follows both files."""

import re
import shlex
import shutil
from pathlib import Path

import pytest
from helpers import cli_subprocess

ROOT = Path(__file__).resolve().parents[2]
CLI = "$(VENV)/bin/healthtech-etl"


def make_recipes() -> dict[str, str]:
    """target -> the healthtech-etl arguments its recipe runs ('' for none), ARGS left as {ARGS}."""
    recipes: dict[str, str] = {}
    target = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        header = re.match(r"^([a-z][a-z-]*):", line)
        if header:
            target = header.group(1)
            continue
        if target and line.startswith("\t") and target not in recipes:
            # The command the recipe runs: at the start of the line or after "then" (not a [ -x ] test).
            command = re.search(r"(?:^\t@?|then )" + re.escape(CLI) + r" ([^;$\n]*?)\s*(\$\(ARGS\))?\s*(;|$)", line)
            if command:
                recipes[target] = command.group(1) + (" {ARGS}" if command.group(2) else "")
    return recipes


def readme_commands() -> list[str]:
    """``make ...`` and ``healthtech-etl ...`` commands in code spans and bash blocks, in order."""
    text = (ROOT / "README.md").read_text()
    candidates: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        candidates += [line.split("#")[0].strip() for line in block.splitlines()]
    candidates += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return [c for c in candidates if re.match(r"^(make [a-z-]+( ARGS=\"[^\"]*\")?|healthtech-etl [^\[<|]*)$", c)]


def as_cli(command: str, recipes: dict[str, str]):
    """The healthtech-etl arguments a README command runs, or None (not a healthtech-etl command)."""
    if command.startswith("healthtech-etl "):
        return shlex.split(command)[1:]
    match = re.match(r'^make ([a-z-]+)(?: ARGS="([^"]*)")?$', command)
    if not match or match.group(1) not in recipes or match.group(1) == "clean":
        return None  # make test, make up, make clean (deletes the venv), ...: not a run of the tool
    return shlex.split(recipes[match.group(1)].replace("{ARGS}", match.group(2) or ""))


def test_the_readme_has_the_examples_we_expect():
    commands = readme_commands()
    assert 'make run ARGS="--as-of 2025-11-01"' in commands
    assert "healthtech-etl db stop" in commands and "make db-stop" in commands
    recipes = make_recipes()
    assert recipes["run"] == "run {ARGS}" and recipes["db-stop"] == "db stop"


def test_every_readme_example_runs_as_shown(tmp_path, db_config):
    recipes = make_recipes()
    shutil.copytree(ROOT / "data" / "raw", tmp_path / "data" / "raw")
    env = {"DATABASE_URL": db_config.url(), "PGDATA_DIR": str(tmp_path / "pg")}
    ran: list[str] = []
    seen: set[tuple] = set()
    try:
        for command in readme_commands():
            args = as_cli(command, recipes)
            if args is None or (args[0] != "db" and tuple(args) in seen):
                continue  # not a tool command, or an ETL example already run (db commands keep their order)
            seen.add(tuple(args))
            result = cli_subprocess(args, cwd=tmp_path, env=env, timeout=300)
            assert result.returncode == 0, f"{command!r} exited {result.returncode}: {result.stderr}"
            assert "Traceback" not in result.stderr
            ran.append(command)
    finally:
        cli_subprocess(["db", "stop", "--force"], cwd=tmp_path, env=env)
    assert 'make run ARGS="--as-of 2025-11-01"' in ran and "healthtech-etl etl" in ran
    assert {"healthtech-etl db start", "healthtech-etl db stop", "make db-stop", "healthtech-etl sample"} <= set(ran)


@pytest.mark.parametrize("command, expected", [
    ('make run ARGS="--as-of 2025-11-01 --fail-on critical"', ["run", "--as-of", "2025-11-01", "--fail-on",
                                                               "critical"]),
    ("make test", None),
    ("make clean", None),
    ("make db-stop", ["db", "stop"]),
    ("healthtech-etl db status", ["db", "status"]),
])
def test_commands_are_expanded_like_make_does(command, expected):
    assert as_cli(command, make_recipes()) == expected
