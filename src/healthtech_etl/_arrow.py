"""The optional pyarrow fast paths: ``pa``, ``pc`` (compute) and ``pa_csv``, or all None.

pyarrow is optional: local installs have a recent one, AWS Glue Python shell 3.9 has
pyarrow 7.0 (a dependency of its awswrangler 2.15.1), other environments may have an older
one or none. The fast paths are used only on pyarrow >= :data:`MIN_VERSION` - the oldest
release the test lanes run (``make test-compat``) - and only when the exact kernel calls
they make behave as expected here (pyarrow 4-6 reject ``extract_regex(array, pattern)``).
Everywhere else the plain pandas/numpy paths run, which give the same results.
"""

import re
from typing import Any, Optional

MIN_VERSION = (7, 0)

pa: Any = None
pc: Any = None
pa_csv: Any = None
#: Why the fast paths are off (None when they are on): for diagnostics only.
disabled_reason: Optional[str] = None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def _probe(pyarrow: Any, compute: Any, csv: Any) -> None:
    """The calls the fast paths make, on a tiny input; raises if any behaves differently."""
    text = pyarrow.array(["104", "x", None], type=pyarrow.string())
    digits = compute.extract_regex(text, r"^(?P<d>[1-9][0-9]*)$").flatten()[0]
    numbers = compute.cast(digits.fill_null("0"), pyarrow.int64())
    if numbers.to_pylist() != [104, 0, 0] or digits.is_valid().to_pylist() != [True, False, False]:
        raise ValueError("extract_regex/cast disagree")
    blanked = compute.if_else(compute.equal(text, ""), pyarrow.scalar(None, text.type), text)
    sink = pyarrow.BufferOutputStream()
    csv.write_csv(pyarrow.Table.from_arrays([blanked], names=["0"]), sink, csv.WriteOptions(include_header=False))
    if sink.getvalue().to_pybytes().splitlines() != [b'"104"', b'"x"', b""]:
        raise ValueError("write_csv output differs")


def _load() -> None:
    global pa, pc, pa_csv, disabled_reason
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.csv
    except ImportError:
        disabled_reason = "pyarrow is not installed"
        return
    if _version(pyarrow.__version__) < MIN_VERSION:
        disabled_reason = f"pyarrow {pyarrow.__version__} is older than {'.'.join(map(str, MIN_VERSION))}"
        return
    try:
        _probe(pyarrow, pyarrow.compute, pyarrow.csv)
    except Exception as exc:  # any API difference: use the plain paths
        disabled_reason = f"pyarrow {pyarrow.__version__} failed the self-check: {type(exc).__name__}: {exc}"
        return
    pa, pc, pa_csv = pyarrow, pyarrow.compute, pyarrow.csv


_load()
