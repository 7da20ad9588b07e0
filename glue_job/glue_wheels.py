"""The Glue job's third-party wheels (glue_job/requirements.txt): fetched once, verified, staged.

    python glue_job/glue_wheels.py stage DEST_DIR    # scripts/build-glue.sh; prints the staged names
    python glue_job/glue_wheels.py list DIR          # the staged wheels in DIR, in install order

1. fetch: ``pip download`` of the pinned CPython 3.9 manylinux2014 x86_64 wheels (``--require-hashes``)
   into the cache (``GLUE_WHEEL_CACHE``, default dist/wheel-cache/), only for a pin that is not cached
   yet: repeated builds need no network;
2. verify: the sha256 of every cached wheel against glue_job/requirements.txt, on every build;
3. stage: a copy in DEST_DIR that Glue's launcher installs ON ITS OWN, offline. The launcher
   (``/tmp/runscript.py``) runs one ``pip install --target=<dir> <file>`` per ``--extra-py-files``
   entry (see its traceback in aws/aws-cdk#20481), and ``--target`` ignores whatever is installed:
   a wheel that declares a requirement sends pip to PyPI, which the job's subnets cannot reach, and
   the run fails before the script starts. python-calamine declares ``packaging>=23.1``, so its
   staged copy drops that unconditional ``Requires-Dist`` (packaging is staged as its own wheel,
   installed first) and carries the build tag ``1glue``, never to be taken for PyPI's file. Nothing
   else changes: every other file is PyPI's byte for byte, RECORD lists the new METADATA and WHEEL.
   A wheel without requirements (packaging) is staged as it is.

Python 3.9 compatible: the compat lane runs it with Glue's Python.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
DEFAULT_CACHE = HERE.parent / "dist" / "wheel-cache"
BUILD_TAG = "1glue"
# What Glue Python shell 3.9 runs on: the wheels pip download picks.
GLUE_PLATFORM = ("--python-version", "3.9", "--implementation", "cp", "--abi", "cp39",
                 "--platform", "manylinux2014_x86_64")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s+--hash=sha256:([0-9a-f]{64})$")
_CONDITIONAL = re.compile(r"\bextra\s*==")


class WheelError(Exception):
    """A pin that cannot be fetched, verified or staged."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sha256: str

    @property
    def prefix(self) -> str:
        """The start of the pin's wheel file names, e.g. ``python_calamine-0.4.0-``."""
        return f"{re.sub(r'[-_.]+', '_', self.name).lower()}-{self.version}-"

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def read_pins(path: Path = REQUIREMENTS) -> list[Pin]:
    pins = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            match = _PIN.match(line)
            if not match:
                raise WheelError(f"{path}:{number}: not `name==version --hash=sha256:<hex>`: {line}")
            pins.append(Pin(*match.groups()))
    return pins


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached(pin: Pin, cache: Path) -> Path | None:
    """The cached wheel of ``pin`` with the pinned sha256, if any."""
    return next((p for p in sorted(cache.glob(f"{pin.prefix}*.whl")) if sha256_of(p) == pin.sha256), None)


def fetch(pins: list[Pin], cache: Path) -> list[Path]:
    """The pinned wheels from the cache, downloading (with pip, hashes required) the ones missing."""
    missing = [pin for pin in pins if cached(pin, cache) is None]
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        for pin in missing:  # a partial or tampered file: pip would reuse it
            for stale in cache.glob(f"{pin.prefix}*.whl"):
                stale.unlink()
        with tempfile.TemporaryDirectory(prefix="glue-wheels-") as tmp:
            requirements = Path(tmp) / "requirements.txt"
            requirements.write_text("".join(pin.requirement + "\n" for pin in missing), encoding="utf-8")
            result = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                 "--only-binary=:all:", *GLUE_PLATFORM, "--require-hashes", "-r", str(requirements),
                 "-d", str(cache)],
                capture_output=True, text=True, timeout=600,
            )
        if result.returncode != 0:
            detail = " | ".join(line for line in (result.stderr + result.stdout).splitlines() if line.strip())
            raise WheelError(f"pip download of {', '.join(p.requirement.split()[0] for p in missing)} "
                             f"into {cache} failed (needs the package index once): {detail[-800:]}")
    found = {pin: cached(pin, cache) for pin in pins}
    wrong = [pin.requirement for pin, path in found.items() if path is None]
    if wrong:
        raise WheelError(f"no wheel with the pinned sha256 in {cache} for: {'; '.join(wrong)}")
    return [path for path in found.values() if path is not None]


def unconditional_requirements(metadata: str) -> list[str]:
    head = metadata.partition("\n\n")[0]
    return [line for line in head.split("\n")
            if line.startswith("Requires-Dist:") and not _CONDITIONAL.search(line)]


def _record_line_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def _new_record(record: str, replaced: dict[str, bytes]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in csv.reader(io.StringIO(record)):
        if row and row[0] in replaced:
            row = [row[0], _record_line_hash(replaced[row[0]]), str(len(replaced[row[0]]))]
        writer.writerow(row)
    return out.getvalue().encode("utf-8")


def _with_build_tag(wheel_file: str) -> bytes:
    lines = [line for line in wheel_file.splitlines() if not line.startswith("Build:")]
    return ("\n".join(lines + [f"Build: {BUILD_TAG}"]) + "\n").encode("utf-8")


def installable_alone(wheel: Path, dest: Path) -> Path:
    """``wheel`` as Glue's launcher can install it by itself, offline: copied into ``dest`` as it
    is, or - when it declares unconditional requirements - without them, under build tag 1glue."""
    with zipfile.ZipFile(wheel) as source:
        dist_info = next(n[: -len("/METADATA")] for n in source.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = source.read(f"{dist_info}/METADATA").decode("utf-8")
        dropped = unconditional_requirements(metadata)
        if not dropped:
            target = dest / wheel.name
            shutil.copyfile(wheel, target)
            return target
        head, blank, body = metadata.partition("\n\n")
        kept = "\n".join(line for line in head.split("\n") if line not in dropped) + blank + body
        replaced = {
            f"{dist_info}/METADATA": kept.encode("utf-8"),
            f"{dist_info}/WHEEL": _with_build_tag(source.read(f"{dist_info}/WHEEL").decode("utf-8")),
        }
        replaced[f"{dist_info}/RECORD"] = _new_record(source.read(f"{dist_info}/RECORD").decode("utf-8"), replaced)
        parts = wheel.name[: -len(".whl")].split("-")
        target = dest / ("-".join([parts[0], parts[1], BUILD_TAG, *parts[-3:]]) + ".whl")
        with zipfile.ZipFile(target, "w") as copy:
            for info in source.infolist():  # same order, dates, modes and compression as PyPI's
                data = replaced[info.filename] if info.filename in replaced else source.read(info.filename)
                copy.writestr(info, data)
    return target


def stage(dest: Path, cache: Path, pins: list[Pin] | None = None) -> list[Path]:
    """Fetch (if needed), verify and stage every pin into ``dest``; the staged files in install order."""
    pins = read_pins() if pins is None else pins
    dest.mkdir(parents=True, exist_ok=True)
    return [installable_alone(wheel, dest) for wheel in fetch(pins, cache)]


def staged(directory: Path, pins: list[Pin] | None = None) -> list[Path]:
    """The staged wheel of every pin in ``directory``, in install order (exactly one each)."""
    found = []
    for pin in read_pins() if pins is None else pins:
        matches = sorted(directory.glob(f"{pin.prefix}*.whl"))
        if len(matches) != 1:
            raise WheelError(f"expected one {pin.prefix}*.whl in {directory}, found {[p.name for p in matches]}: "
                             "run `make build-glue`")
        found.append(matches[0])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glue_wheels.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("stage", "list"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("GLUE_WHEEL_CACHE") or DEFAULT_CACHE))
    args = parser.parse_args(argv)
    try:
        if args.command == "stage":
            paths = stage(args.directory, args.cache)
        else:
            paths = staged(args.directory)
    except WheelError as exc:
        print(f"build-glue: {exc}", file=sys.stderr)
        return 1
    print("\n".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
