"""A stand-in for AWS Glue Python shell's launcher (``/tmp/runscript.py`` on Glue).

What it does with a job (its traceback in aws/aws-cdk#20481: ``download_and_install`` ->
``install_package`` -> ``check_call([sys.executable, "-m", "pip", "install", "--target=<dir>",
<file>])``): every ``--extra-py-files`` wheel is installed ON ITS OWN, in the order given, into one
directory with ``pip install --target`` (``--target`` implies ``--ignore-installed``: neither the
preinstalled libraries nor the wheels installed before satisfy a wheel's requirements; and the job's
subnets have no route to PyPI, hence ``--no-index`` and no pip configuration here), a failed install
fails the run; then the job script runs in the same interpreter with ``<dir>`` on ``sys.path``, as
``__main__``, with the job arguments in ``sys.argv``; its exit code is the run's outcome.

    python tests/aws/glue_launcher.py --extra-py-files dist/glue/packaging-25.0-py3-none-any.whl,... \\
        glue_job/glue_etl.py --RAW_BUCKET ...
"""

import os
import runpy
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


def install_wheel(wheel: PathLike, target: PathLike, python: PathLike = sys.executable) -> subprocess.CompletedProcess:
    """Glue's install of one --extra-py-files wheel, offline (no index, no pip configuration)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    return subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
         "--quiet", f"--target={target}", str(wheel)],
        capture_output=True, text=True, timeout=300, env={**env, "PIP_CONFIG_FILE": os.devnull},
    )


def run_script(script: PathLike, args: Sequence[str], lib_dirs: Sequence[PathLike] = ()) -> int:
    """Run ``script`` as ``__main__`` in this interpreter, as Glue does; return its exit code."""
    for lib_dir in reversed([str(d) for d in lib_dirs]):
        if lib_dir not in sys.path:
            sys.path.insert(0, lib_dir)
    saved_argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved_argv
    return 0


def main(argv: Sequence[str]) -> int:
    # As on Glue, nothing but the standard path and the target dir: not this file's directory.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [entry for entry in sys.path if str(Path(entry or ".").resolve()) != here]
    args = list(argv[1:])
    wheels = []
    while len(args) >= 2 and args[0] == "--extra-py-files":
        wheels += [w for w in args[1].split(",") if w]
        args = args[2:]
    if not args:
        print("usage: glue_launcher.py [--extra-py-files a.whl,b.whl] script.py [job arguments]", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="glue-python-libs-") as target:
        for wheel in wheels:
            result = install_wheel(wheel, target)
            if result.returncode != 0:
                sys.stderr.write(result.stdout + result.stderr)
                print(f"glue_launcher: installing {wheel} failed", file=sys.stderr)
                return 1
        return run_script(args[0], args[1:], lib_dirs=[target])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
