"""The ISA-L inflation path (inflate.member_chunks, fast=True) against zipfile's (fast=False):
the same bytes for any content and chunk size, and the same failures for damaged members."""

import os
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthtech_etl import inflate
from healthtech_etl.inflate import fast_inflate_available, member_chunks

MEMBER = "xl/worksheets/sheet1.xml"


def write_zip(path, data: bytes, method: int = zipfile.ZIP_DEFLATED, level: int = 6):
    with zipfile.ZipFile(path, "w", method, compresslevel=level if method == zipfile.ZIP_DEFLATED else None) as archive:
        archive.writestr("[Content_Types].xml", b"<x/>")
        archive.writestr(MEMBER, data)
        archive.writestr("xl/after.xml", b"<after/>")
    return path


def both(path, size: int) -> tuple:
    fast = list(member_chunks(path, MEMBER, size, fast=True))
    plain = list(member_chunks(path, MEMBER, size, fast=False))
    return fast, plain


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(st.binary(max_size=5000), st.text(alphabet='<c r="A1>/v0123456789 \n', max_size=20_000).map(str.encode)),
    size=st.integers(1, 70_000),
    method=st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED]),
    level=st.sampled_from([0, 1, 9]),
)
def test_fast_and_reference_inflation_give_the_same_bytes(tmp_path, data, size, method, level):
    path = write_zip(tmp_path / "book.xlsx", data, method, level)
    fast, plain = both(path, size)
    assert b"".join(fast) == b"".join(plain) == data
    assert all(0 < len(chunk) <= size for chunk in fast + plain)


def test_a_large_member_reads_the_same_in_small_pieces(tmp_path):
    data = b"".join(b'<row r="%d"><c r="A%d"><v>%d</v></c></row>' % (i, i, i) for i in range(1, 200_000))
    data += os.urandom(300_000)  # incompressible tail: stored blocks inside the deflate stream
    path = write_zip(tmp_path / "big.xlsx", data)
    fast, plain = both(path, 1 << 20)
    assert b"".join(fast) == b"".join(plain) == data


def damaged(tmp_path, how: str):
    data = b"<row>" * 50_000
    path = write_zip(tmp_path / f"{how}.xlsx", data)
    raw = bytearray(path.read_bytes())
    info = zipfile.ZipFile(path).getinfo(MEMBER)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    if how == "crc":  # the member's bytes are fine, its recorded CRC is not
        raw[info.header_offset + 14] ^= 0xFF  # in the local header and in the central directory
        central = bytes(raw).find(b"PK\x01\x02")
        while bytes(raw[central + 46:central + 46 + len(MEMBER)]) != MEMBER.encode():
            central = bytes(raw).find(b"PK\x01\x02", central + 4)
        raw[central + 16] ^= 0xFF
    elif how == "flipped":
        raw[start + 40:start + 60] = bytes(byte ^ 0xFF for byte in raw[start + 40:start + 60])
    else:  # truncated: the deflate stream ends early (its tail overwritten by a stored block end)
        raw[start + info.compress_size - 8:start + info.compress_size] = b"\x00" * 8
    path.write_bytes(bytes(raw))
    return path


def inflate_errors() -> tuple:
    errors = [zipfile.BadZipFile, zlib.error, EOFError]
    if fast_inflate_available():
        from isal import isal_zlib

        errors.append(isal_zlib.error)
    return tuple(errors)


@pytest.mark.parametrize("how", ["crc", "flipped", "truncated"])
@pytest.mark.parametrize("fast", [True, False])
def test_damaged_members_fail_on_both_paths(tmp_path, how, fast):
    path = damaged(tmp_path, how)
    with pytest.raises(inflate_errors()):
        b"".join(member_chunks(path, MEMBER, 1 << 16, fast=fast))


def test_encrypted_members_take_the_zipfile_path(tmp_path, monkeypatch):
    path = write_zip(tmp_path / "book.xlsx", b"<sheetData/>")
    monkeypatch.setattr(inflate, "_fast_chunks", lambda *args: pytest.fail("fast path used"))
    original = zipfile.ZipFile.getinfo

    def encrypted(self, name):
        found = original(self, name)
        found.flag_bits |= 0x1
        return found

    monkeypatch.setattr(zipfile.ZipFile, "getinfo", encrypted)
    with pytest.raises(RuntimeError, match="encrypted"):  # what zipfile says without a password
        b"".join(member_chunks(path, MEMBER, 1024, fast=True))


def test_isal_is_installed_where_the_lock_pins_it():
    """The main lane pins isal (requirements/run.txt); the Glue lanes have none and use zlib."""
    import sys

    if sys.version_info >= (3, 11):
        assert fast_inflate_available()
