"""Output directories and files: checked before anything starts (creating nothing), written atomically."""

import errno
import os
from collections.abc import Callable
from pathlib import Path

from .errors import ConfigError


def check_output_dir(path: Path, what: str) -> None:
    """Raise ConfigError unless ``path`` is (or can be created as) a writable directory with
    free space. Creates nothing."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe != path and not probe.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {probe} is a file")
    if probe == path and not path.is_dir():
        raise ConfigError(f"{what} {path} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable")
    try:
        stats = os.statvfs(probe)
    except OSError:  # no statvfs (or not allowed): the write itself will tell
        return
    if stats.f_bavail == 0:
        raise ConfigError(f"{what} {path}: no space left on the device")


def make_output_dir(path: Path, what: str) -> Path:
    """Create ``path`` (and parents) or raise ConfigError with one line."""
    check_output_dir(path, what)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be created: {describe_os_error(exc)}") from exc
    return Path(path)


def write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` through ``<path>.<pid>.tmp`` (``write(tmp_path)``) + rename: readers never see
    half a file; on failure the temporary file is removed. The pid keeps concurrent runs apart."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with tmp.open("rb") as handle:  # on disk before the rename makes it visible
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


def describe_os_error(exc: OSError) -> str:
    """``strerror`` of an OSError (``No space left on device``), for one-line messages."""
    return exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)
