"""healthtech_etl._arrow: the Arrow fast paths only on a pyarrow the test lanes cover (>= 7)
whose kernels behave as the fast paths expect; otherwise all None and the plain paths run."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from healthtech_etl import _arrow


def arrow_state(fake_root: Path) -> dict:
    """Import healthtech_etl._arrow in a fresh interpreter with a fake pyarrow first on the path."""
    code = (f"import sys, json; sys.path.insert(0, {str(fake_root)!r})\n"
            "import healthtech_etl._arrow as a\n"
            "print(json.dumps({'on': a.pa is not None, 'all_none': a.pa is a.pc is a.pa_csv is None, "
            "'reason': a.disabled_reason}))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def fake_pyarrow(root: Path, version: str, compute: str = "") -> Path:
    package = root / "pyarrow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"__version__ = {version!r}\n", encoding="utf-8")
    (package / "compute.py").write_text(textwrap.dedent(compute), encoding="utf-8")
    (package / "csv.py").write_text("", encoding="utf-8")
    return root


@pytest.mark.parametrize("version", ["4.0.1", "5.0.0", "6.0.1"])
def test_pyarrow_older_than_7_is_not_used(tmp_path, version):
    state = arrow_state(fake_pyarrow(tmp_path, version))

    assert state == {"on": False, "all_none": True, "reason": f"pyarrow {version} is older than 7.0"}


def test_a_pyarrow_whose_kernels_differ_is_not_used(tmp_path):
    # pyarrow 4-6 behaviour, under a newer version number.
    compute = """
        def extract_regex(*args, **kwargs):
            raise TypeError("extract_regex() takes 1 positional argument but 2 were given")
    """
    root = fake_pyarrow(tmp_path, "99.0.0", compute)
    (root / "pyarrow" / "__init__.py").write_text(
        "__version__ = '99.0.0'\ndef array(values, type=None):\n    return values\ndef string():\n    return 'string'\n",
        encoding="utf-8")

    state = arrow_state(root)

    assert not state["on"] and state["all_none"]
    assert state["reason"] == ("pyarrow 99.0.0 failed the self-check: TypeError: "
                               "extract_regex() takes 1 positional argument but 2 were given")


def test_the_installed_pyarrow_is_used_exactly_when_it_is_7_or_newer():
    try:
        import pyarrow
    except ImportError:
        assert _arrow.pa is None and _arrow.disabled_reason == "pyarrow is not installed"
        return
    supported = _arrow._version(pyarrow.__version__) >= _arrow.MIN_VERSION
    assert (_arrow.pa is pyarrow) == supported
    assert (_arrow.disabled_reason is None) == supported


def test_clean_and_load_use_the_guarded_modules():
    from healthtech_etl import clean, load

    assert clean._pa is _arrow.pa and clean._pc is _arrow.pc
    assert load._pa is _arrow.pa and load._pc is _arrow.pc and load._pa_csv is _arrow.pa_csv
