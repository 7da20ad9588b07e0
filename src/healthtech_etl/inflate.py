"""Inflate one member of a zip package (an xlsx part) in chunks, fast when ISA-L is installed.

The sheet scans (:mod:`.sheet_scan`) read every byte of a sheet's XML; with the standard
``zlib`` inflating a 1M-row sheet (245 MB of XML) takes 0.7 s, with ISA-L (the ``isal``
package, an optional dependency like the fast readers) 0.12 s. ``zipfile`` stays the
reference path: it is used whenever ``isal`` is missing (the AWS Glue runtime), for members
that are not plainly deflated or stored (encrypted, other methods), and the tests compare
both paths byte for byte.
"""

import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # the 30-byte local file header
_LOCAL_SIGNATURE = b"PK\x03\x04"
# Compressed bytes inflated at a time: small pieces stay in the CPU cache (a 1M-row sheet
# inflates in 0.13 s this way, 0.28 s in 1 MB pieces).
_READ = 64 << 10


def _isal() -> Any:
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


_ISAL = _isal()


def fast_inflate_available() -> bool:
    """Whether ISA-L inflation is installed (otherwise ``zipfile``/``zlib`` is used)."""
    return _ISAL is not None


def member_chunks(path: Path, member: str, size: int, fast: Optional[bool] = None) -> Iterator[bytes]:
    """The decompressed bytes of ``member`` in chunks of at most ``size`` bytes.

    ``fast``: force ISA-L on (if installed) or off; default: on when installed. A damaged
    stream or a CRC mismatch raises (``zipfile.BadZipFile`` or the inflater's error), as
    ``zipfile`` does."""
    use_fast = _ISAL is not None if fast is None else (fast and _ISAL is not None)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
        plain = info.compress_type in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED) and not info.flag_bits & 0x1
        if not (use_fast and plain):
            with archive.open(info) as stream:
                while True:
                    chunk = stream.read(size)
                    if not chunk:
                        return
                    yield chunk
        else:
            yield from _fast_chunks(Path(path), info, size)


def _fast_chunks(path: Path, info: zipfile.ZipInfo, size: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
            raise zipfile.BadZipFile(f"bad local file header for {info.filename!r}")
        fields = _LOCAL_HEADER.unpack(header)
        handle.seek(fields[-2] + fields[-1], 1)  # file name and extra field
        left = info.compress_size
        crc = 0
        produced = 0
        if info.compress_type == zipfile.ZIP_STORED:
            while left:
                chunk = handle.read(min(size, left))
                if not chunk:
                    raise zipfile.BadZipFile(f"truncated member {info.filename!r}")
                left -= len(chunk)
                crc = _ISAL.crc32(chunk, crc)
                produced += len(chunk)
                yield chunk
        else:
            inflater = _ISAL.decompressobj(-zlib.MAX_WBITS)
            pending = b""
            while not inflater.eof:
                if not pending and left:
                    pending = handle.read(min(_READ, left))
                    if not pending:
                        raise zipfile.BadZipFile(f"truncated member {info.filename!r}")
                    left -= len(pending)
                # At most ``size`` bytes out; the input not used yet stays in unconsumed_tail,
                # and output the inflater still holds comes with the next call.
                chunk = inflater.decompress(pending, size)
                pending = inflater.unconsumed_tail
                if chunk:
                    crc = _ISAL.crc32(chunk, crc)
                    produced += len(chunk)
                    yield chunk
                elif not pending and not left and not inflater.eof:
                    raise zipfile.BadZipFile(f"truncated deflate stream in {info.filename!r}")
        if produced != info.file_size or crc != info.CRC:
            raise zipfile.BadZipFile(f"bad CRC or size for {info.filename!r}")
