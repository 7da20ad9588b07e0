"""Overlong text, cut to a bounded prefix before any reader allocates it.

A cell holds at most 32,767 characters (Excel's own limit, ``clean.MAX_CELL_CHARS``): the cleaner
rejects a longer one as ``invalid_<column>`` and stores its first 32,767 characters. But every
reader loads a text whole before anything judges it, so a 300 KB workbook whose one shared
string is ``'A' * 300_000_000`` (deflate packs it ~1000:1) costs each reader ~1.7 GB.

Before any reader runs, :class:`Defuser` looks for text that may be longer than the limit:

* in the **shared strings**, whenever that part holds more than :data:`MAX_CHARS` bytes (a
  character takes at least a byte): an ``<si>`` spanning more than :data:`MAX_CHARS` bytes, found
  by a few byte searches per 32 KB while the part inflates (the inflation is the cost);
* in the **sheet XML** (inline strings, formula string results) only when it deflated more than
  :data:`RATIO` times: normal sheets deflate 5-15x, one holding a 300 MB repeated text ~1000x,
  and searching a normal 245 MB sheet on every run would cost a good part of the read. A long
  text that does not compress that well costs no more memory than the file's own size.

Each such element is then measured exactly and, if its text is overlong, the readers read a copy
of the workbook (:func:`write_copy`) in which that text keeps its first :data:`KEEP` characters
that survive the cleaner's hygiene, counted as each reader decodes them (entities and
``_xHHHH_`` escapes are one character; python-calamine decodes escapes within each ``<t>``,
openpyxl drops ``x005F_`` from shared strings). The cut never falls inside a character, an
entity or an escape as any reader sees it; the runs of a rich text before it are kept, the rest
dropped, and the open elements closed. So the cell is still too long, its stored raw cell
(``clean.raw_cells``) is the same, and so is every other result. After the cut comes ``~`` and a
digest of the element's whole content: equal overlong cells stay equal (``duplicate_row``) and
different ones different, and nothing past the 32,767th character is ever shown.

Left as they are: a part that is not UTF-8; an element whose markup is not followed here (a
custom entity, a tag over 1 MB); formulas and other non-value text; an element hidden behind a
fake ``<si>`` / ``<c>`` start (nested, or in an attribute value, which XML forbids but a lenient
reader may accept) in a part without comments or CDATA (those are parsed).
A text whose first :data:`WINDOW` characters hold fewer than :data:`KEEP` survivors (a flood of
``_x0000_`` escapes) is cut soon after: still too long, but its stored raw cell is then what
survives of the cut text (and the digest). An overlong header of an ignored extra column is
logged and reported cut (with the digest).
README: "What each reader does, and how they are made to agree".
"""

import hashlib
import logging
import posixpath
import re
import shutil
import tempfile
import zipfile
from bisect import bisect_left
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import IO, Optional
from xml.etree import ElementTree
from xml.parsers import expat

logger = logging.getLogger(__name__)

# False: read every workbook as it is (the tests compare both ways).
ENABLED = True
MAX_CHARS = 32_767  # clean.MAX_CELL_CHARS (clean imports the extractor: not imported here)
KEEP = MAX_CHARS + 1  # characters surviving hygiene that each reader still finds in a cut text
# Sheet XML is searched only when it deflated more than RATIO times: normal sheets deflate
# 5-15x (the 1M-row benchmark sheet: 7x), one holding a 300 MB repeated text ~1000x. Searching
# every sheet would inflate 245 MB once more on each run; a text that does not deflate that well
# costs no more memory than the file's own size.
RATIO = 100
# Decoded characters examined before the cut is forced: a text whose first WINDOW characters
# mostly vanish in hygiene (a flood of _x0000_ escapes) is cut soon after.
WINDOW = 1 << 20
_CHUNK = 8 << 20
_PIECE = 1 << 18  # longest text token handled at once
_MAX_TAG = 1 << 20
_MAX_DEPTH = 64
_PENDING_BYTES = 64 << 20  # raw bytes held while the cut is being decided
_PENDING_TOKENS = 1 << 18
_LOOKAHEAD = 8  # an escape spans 7 characters: a cut is checked against the text after it

_DECLARATION = re.compile(rb"\A(?:\xef\xbb\xbf)?<\?xml\b[^>]*\?>")
_ENCODING = re.compile(rb"""\bencoding\s*=\s*["']([^"']*)["']""")
_ROOT = re.compile(rb"<(?:([A-Za-z_][\w.\-]*):)?(?:sst|worksheet)[\s/>]")
_TAG = re.compile(rb"""<[^<>"']*(?:(?:"[^"]*"|'[^']*')[^<>"']*)*>""")
_NAME = re.compile(rb"</?([^\s/>]+)")
_TYPE = re.compile(rb"""\st\s*=\s*["']([^"']*)["']""")
_ENTITY = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]{1,7})|#x([0-9a-fA-F]{1,6}));")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
# The escapes the readers decode (extract._ESCAPE; python-calamine per <t>, openpyxl's text by
# the extractor after openpyxl removed "x005F_" from shared strings).
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_X005F = re.compile("x005F_")

# Token kinds.
_TEXT, _CDATA_TEXT, _START, _END, _EMPTY, _CDATA_OPEN, _CDATA_CLOSE, _OTHER = range(8)


class _Unsupported(Exception):
    """Markup this module does not follow: the unit is left as it is."""


@dataclass
class Part:
    """One part of the package holding overlong text: its member name, the kind of element
    holding a text (``si`` or ``c``), and the offsets (in the inflated XML) of those to cut."""

    member: str
    root: bytes
    prefix: bytes = b""
    regular: bool = True
    starts: list[int] = field(default_factory=list)
    cut_bytes: list[int] = field(default_factory=list)  # content size of each element cut


class Defuser:
    """``with Defuser(entity) as defuser: path = defuser.defuse(path, sheet_member)``: the path
    of a copy of the workbook with its overlong text cut (in a temporary directory removed on
    exit), or ``path`` itself when there is none."""

    def __init__(self, entity: str = "workbook") -> None:
        self.entity = entity
        self.directory: Optional[str] = None

    def __enter__(self) -> "Defuser":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def defuse(self, path: Path, sheet_member: str) -> Path:
        if not ENABLED:
            return path
        parts = find_overlong(path, sheet_member)
        if not parts:
            return path
        self.directory = tempfile.mkdtemp(prefix="healthtech-etl-overlong-")
        copy = Path(self.directory) / Path(path).name
        write_copy(path, copy, parts)
        sizes = [size for part in parts for size in part.cut_bytes]
        logger.warning(
            "%s file %s: %d text value(s) in %s over %s characters (the longest: %s bytes of XML) read "
            "cut after their first %s characters, so that no reader loads them whole (a cell over "
            "the limit is rejected either way)", self.entity, Path(path).name, len(sizes),
            " and ".join(part.member for part in parts), f"{MAX_CHARS:,}", f"{max(sizes, default=0):,}",
            f"{KEEP:,}",
        )
        return copy


def sheet_is_searched(size: int, compressed: int) -> bool:
    """Whether sheet XML of ``size`` bytes (``compressed`` in the package) is searched for
    overlong text: it deflated more than :data:`RATIO` times."""
    return size > MAX_CHARS and size > RATIO * max(compressed, 1)


def find_overlong(path: Path, sheet_member: str) -> list[Part]:
    """The parts of the workbook at ``path`` holding text over :data:`MAX_CHARS` characters:
    its shared strings, and the sheet XML ``sheet_member`` when it deflated more than
    :data:`RATIO` times."""
    found = []
    with zipfile.ZipFile(path) as archive:
        checks = [(info, b"si") for info in _shared_strings(archive) if info.file_size > MAX_CHARS]
        sheet = archive.getinfo(sheet_member)
        if sheet_is_searched(sheet.file_size, sheet.compress_size):
            checks.append((sheet, b"c"))
        for info, root in checks:
            part = _scan_part(archive, info, root)
            if part is not None:
                found.append(part)
    return found


def write_copy(path: Path, copy: Path, parts: list[Part]) -> None:
    """Write ``copy``: the workbook at ``path`` with the elements :func:`find_overlong` found
    cut; every other member copied unchanged (re-compressed)."""
    by_member = {part.member: part for part in parts}
    with zipfile.ZipFile(path) as source, \
            zipfile.ZipFile(copy, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        for info in source.infolist():
            part = by_member.get(info.filename)
            large = info.file_size >= zipfile.ZIP64_LIMIT
            with source.open(info) as reader, target.open(info.filename, "w", force_zip64=large) as writer:
                if part is None:
                    shutil.copyfileobj(reader, writer, _CHUNK)
                else:
                    part.cut_bytes = _rewrite(reader, writer, part)


def _shared_strings(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The shared strings part(s): the fixed name the Rust readers open (any case) and the
    workbook relationship's target openpyxl opens."""
    names = {"xl/sharedstrings.xml"}
    try:
        rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ElementTree.ParseError):
        rels = None
    for rel in rels if rels is not None else ():
        if rel.get("Type", "").endswith("/sharedStrings"):
            target = rel.get("Target", "")
            target = target.lstrip("/") if target.startswith("/") else "xl/" + target
            names.add(posixpath.normpath(target).lower())
    return [info for info in archive.infolist() if info.filename.lower() in names]


def _scan_part(archive: zipfile.ZipFile, info: zipfile.ZipInfo, root: bytes) -> Optional[Part]:
    """:class:`Part` if the part holds overlong text, else None."""
    with archive.open(info) as stream:
        head = stream.read(_CHUNK)
        declaration = _DECLARATION.match(head)
        encoding = _ENCODING.search(declaration.group()) if declaration else None
        if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (
            encoding is not None and encoding.group(1).lower().replace(b"-", b"") != b"utf8"
        ):
            logger.debug("%s is not UTF-8: not searched for overlong text", info.filename)
            return None
        body = declaration.end() if declaration else 0
        found = _ROOT.search(head, body, body + 65536)
        prefix = found.group(1) + b":" if found is not None and found.group(1) else b""
        part = Part(info.filename, root, prefix)
        candidates = _long_elements(stream, head, body, part)
    if candidates is None:  # a comment, CDATA section, DOCTYPE...: follow the real structure
        part.regular = False
        with archive.open(info) as stream:
            candidates = _long_elements_parsed(stream, part)
    if not candidates:
        return None
    with archive.open(info) as stream:
        source = _Source(stream)
        for start in candidates:
            source.copy_to(start, None)
            if source.position == start and _Cutter(source, part, None).run() is not None:
                part.starts.append(start)
    return part if part.starts else None


def _needles(part: Part) -> tuple[bytes, ...]:
    """The starts of the elements holding one text: ``<si`` (shared strings), ``<c `` / ``<c>``."""
    name = b"<" + part.prefix + part.root
    return (name,) if part.root == b"si" else (name + b" ", name + b">")


def _long_elements(stream: IO[bytes], head: bytes, body: int, part: Part) -> Optional[list[int]]:
    """Offsets of the elements spanning more than :data:`MAX_CHARS` bytes (up to the next one's
    start), or None if the part holds markup other than elements (comments, CDATA, processing
    instructions, a DOCTYPE) and must be parsed instead.

    From the last element start known, the last start within the next :data:`MAX_CHARS` bytes
    (a reverse byte search from that window's end) is the next one to continue from: a few
    searches per window, whatever the number of elements."""
    needles = _needles(part)
    width = max(map(len, needles))
    if _irregular(head, body):
        return None
    buffer, base, eof = head, 0, False
    last: Optional[int] = None  # absolute offset of the last element start
    found: list[int] = []

    def more(keep_from: int) -> bool:
        nonlocal buffer, base, eof
        chunk = stream.read(_CHUNK)
        if not chunk:
            eof = True
            return False
        if _irregular(chunk) or (buffer[-1:] == b"<" and chunk[:1] in (b"!", b"?")):
            raise _Irregular
        buffer, base = buffer[keep_from:] + chunk, base + keep_from
        return True

    try:
        while True:
            if last is None:
                first = _find(buffer, needles, 0)
                if first < 0:
                    if not more(max(len(buffer) - width, 0)):
                        return found
                    continue
                last = base + first
                continue
            at = last - base
            end = at + MAX_CHARS + width
            if len(buffer) < end and not eof:
                more(at)
                continue
            following = _rfind(buffer, needles, at + 1, min(end, len(buffer)))
            if following >= 0:
                last = base + following
                continue
            if len(buffer) - at <= MAX_CHARS:  # the last element, short, ends the part
                return found
            found.append(last)
            following = _find(buffer, needles, at + 1)
            while following < 0:
                if not more(max(len(buffer) - width, 0)):
                    return found
                following = _find(buffer, needles, 0)
            last = base + following
    except _Irregular:
        return None


class _Irregular(Exception):
    pass


def _irregular(data: bytes, start: int = 0) -> bool:
    """Whether ``data[start:]`` holds a comment, CDATA section, DOCTYPE or processing
    instruction (where a fake element start could hide). "!" and "?" first: one-byte searches
    are a memchr, and normal XML has neither."""
    return (data.find(b"!", start) >= 0 and data.find(b"<!", start) >= 0) or (
        data.find(b"?", start) >= 0 and data.find(b"<?", start) >= 0)


def _find(buffer: bytes, needles: tuple[bytes, ...], start: int) -> int:
    hits = [hit for hit in (buffer.find(needle, start) for needle in needles) if hit >= 0]
    return min(hits) if hits else -1


def _rfind(buffer: bytes, needles: tuple[bytes, ...], start: int, end: int) -> int:
    return max(buffer.rfind(needle, start, end) for needle in needles)


def _long_elements_parsed(stream: IO[bytes], part: Part) -> list[int]:
    """:func:`_long_elements` for a part holding other markup: the real element starts, from
    an XML parser (expat: C, streaming; only element starts reach Python)."""
    parser = expat.ParserCreate()
    name = (part.prefix + part.root).decode()
    parent = (part.prefix + (b"sst" if part.root == b"si" else b"row")).decode()
    stack: list[str] = []
    starts: list[int] = []

    def start(tag: str, attributes: object) -> None:
        if tag == name and stack and stack[-1] == parent:
            starts.append(parser.CurrentByteIndex)
        stack.append(tag)

    def end(tag: str) -> None:
        stack.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    size, parsing = 0, True
    while True:
        chunk = stream.read(_CHUNK)
        size += len(chunk)
        try:
            if parsing:
                parser.Parse(chunk, not chunk)
        except expat.ExpatError:  # malformed: the elements up to there (the readers judge the rest)
            parsing = False
        if not chunk:
            break
    ends = [*starts[1:], size]
    return [begin for begin, finish in zip(starts, ends) if finish - begin > MAX_CHARS]


def _rewrite(reader: IO[bytes], writer: IO[bytes], part: Part) -> list[int]:
    """Copy the part, its elements at ``part.starts`` cut. Returns their content sizes."""
    source = _Source(reader)
    sizes = []
    for start in part.starts:
        source.copy_to(start, writer)
        if source.position == start:
            size = _Cutter(source, part, writer).run()
            if size is not None:
                sizes.append(size)
    source.copy_to(None, writer)
    return sizes


class _Source:
    """The inflated bytes of one part, read forward a chunk at a time."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buffer = b""
        self.at = 0  # next byte: buffer[at]
        self.base = 0  # absolute offset of buffer[0]
        self.eof = False

    @property
    def position(self) -> int:
        return self.base + self.at

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.stream.read(_CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buffer, self.base, self.at = self.buffer[self.at:] + chunk, self.base + self.at, 0
        return True

    def take(self, end: int) -> bytes:
        data = self.buffer[self.at:end]
        self.at = end
        return data

    def copy_to(self, offset: Optional[int], writer: Optional[IO[bytes]]) -> None:
        """Copy (or skip, without ``writer``) up to absolute ``offset`` (None: the end)."""
        while offset is None or self.position < offset:
            if self.at >= len(self.buffer) and not self.more():
                return
            end = len(self.buffer) if offset is None else min(len(self.buffer), self.at + offset - self.position)
            data = self.take(end)
            if writer is not None:
                writer.write(data)


class _Tokens:
    """XML tokens of a :class:`_Source`: text (at most :data:`_PIECE` bytes, never splitting a
    character or an entity), tags, and CDATA / comment / processing-instruction pieces."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.inside: Optional[int] = None  # _CDATA_TEXT or _OTHER while in such a section
        self.terminator = b""

    def next(self) -> Optional[tuple[int, bytes]]:
        source = self.source
        while True:
            buffer, at = source.buffer, source.at
            if at >= len(buffer):
                if not source.more():
                    if self.inside is not None:
                        raise _Unsupported("unterminated section")
                    return None
                continue
            if self.inside is not None:
                token = self._section(buffer, at)
            elif buffer[at] != 0x3C:  # "<"
                token = self._text(buffer, at)
            else:
                token = self._markup(buffer, at)
            if token is not None:
                return token

    def _section(self, buffer: bytes, at: int) -> Optional[tuple[int, bytes]]:
        source, kind = self.source, self.inside
        end = buffer.find(self.terminator, at)
        if end == at:
            self.inside = None
            return (_CDATA_CLOSE if kind == _CDATA_TEXT else _OTHER), source.take(at + len(self.terminator))
        if end < 0:
            if len(buffer) - at < _PIECE + len(self.terminator) and source.more():
                return None
            if source.eof and len(buffer) - at < len(self.terminator):
                raise _Unsupported("unterminated section")
            end = len(buffer) - len(self.terminator) + 1
        end = min(end, at + _PIECE)
        if kind == _CDATA_TEXT:
            end = _char_boundary(buffer, at, end)
        if end <= at:
            raise _Unsupported("not UTF-8")
        return kind, source.take(end)

    def _text(self, buffer: bytes, at: int) -> Optional[tuple[int, bytes]]:
        source = self.source
        end = buffer.find(b"<", at, at + _PIECE)
        if end < 0:
            if len(buffer) - at < _PIECE and source.more():
                return None
            end = min(len(buffer), at + _PIECE)
            ampersand = buffer.rfind(b"&", max(at, end - 12), end)
            if ampersand >= 0 and buffer.find(b";", ampersand, end) < 0:
                if ampersand == at:
                    raise _Unsupported("bare ampersand")
                end = ampersand
            end = _char_boundary(buffer, at, end)
        return _TEXT, source.take(end)

    def _markup(self, buffer: bytes, at: int) -> Optional[tuple[int, bytes]]:
        source = self.source
        head = buffer[at:at + 9]
        if len(head) < 9 and source.more():
            return None
        for opening, kind, terminator in ((b"<![CDATA[", _CDATA_TEXT, b"]]>"), (b"<!--", _OTHER, b"-->"),
                                          (b"<?", _OTHER, b"?>")):
            if head.startswith(opening):
                self.inside, self.terminator = kind, terminator
                return (_CDATA_OPEN if kind == _CDATA_TEXT else _OTHER), source.take(at + len(opening))
        if head.startswith(b"<!"):
            raise _Unsupported("declaration")
        match = _TAG.match(buffer, at)
        if match is None:
            if len(buffer) - at > _MAX_TAG or not source.more():
                raise _Unsupported("tag")
            return None
        raw = source.take(match.end())
        kind = _END if raw[1:2] == b"/" else _EMPTY if raw.endswith(b"/>") else _START
        return kind, raw


def _char_boundary(buffer: bytes, start: int, end: int) -> int:
    """``end``, or earlier, so that ``buffer[start:end]`` does not end inside a UTF-8 character."""
    if end <= start or end >= len(buffer):
        return end
    first = end - 1
    while first > start and buffer[first] & 0xC0 == 0x80 and end - first < 4:
        first -= 1
    lead = buffer[first]
    size = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return end if first + size <= end else first


def _decode(raw: bytes) -> str:
    """XML character data: UTF-8, the predefined entities and character references."""
    text = _decode_literal(raw)
    if "&" not in text:
        return text
    if "&" in _ENTITY.sub("", text):  # a custom entity (a DOCTYPE's), or a bare "&"
        raise _Unsupported("entity")
    try:
        return _ENTITY.sub(_entity, text)
    except ValueError as exc:  # a character reference past U+10FFFF
        raise _Unsupported("character reference") from exc


def _decode_literal(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unsupported("not UTF-8") from exc


def _entity(match: "re.Match[str]") -> str:
    name, decimal, hexadecimal = match.groups()
    if name:
        return _NAMED[name]
    return chr(int(decimal) if decimal else int(hexadecimal, 16))


def _raw_length(raw: bytes, chars: int, literal: bool) -> int:
    """Bytes of ``raw`` (character data, or CDATA content if ``literal``) holding its first
    ``chars`` decoded characters: never inside an entity."""
    text = raw.decode("utf-8")
    if literal or "&" not in text:
        return len(text[:chars].encode("utf-8"))
    count = position = size = 0
    for match in _ENTITY.finditer(text):
        plain = match.start() - position
        if count + plain >= chars:
            break
        count += plain + 1
        size += len(text[position:match.start()].encode("utf-8")) + len(match.group())
        position = match.end()
        if count == chars:
            return size
    return size + len(text[position:position + chars - count].encode("utf-8"))


def _survivors(text: str) -> int:
    """Characters of ``text`` the cleaner's hygiene keeps, its ``_xHHHH_`` escapes decoded (a
    count: each escape is one character, kept unless it is a control character)."""
    from .clean import _CONTROL

    if "_x" not in text:
        return len(_CONTROL.sub("", text))
    escapes = _ESCAPE.findall(text)
    removed = sum(map(_control_escapes().__contains__, escapes))
    return len(_CONTROL.sub("", _ESCAPE.sub("", text))) + len(escapes) - removed


@lru_cache(maxsize=1)
def _control_escapes() -> frozenset:
    """The ``HHHH`` of every escape decoding to a character hygiene removes, in any case."""
    from .clean import _CONTROL

    found = set()
    for code in range(0x10000):
        if _CONTROL.match(chr(code)):
            digits = f"{code:04x}"
            found.update("".join(chars) for chars in product(*({digit, digit.upper()} for digit in digits)))
    return frozenset(found)


class _Views:
    """A prefix of one element's text (``text``; ``runs``: where each ``<t>`` starts) as each
    reader decodes it: python-calamine decodes ``_xHHHH_`` within each ``<t>``; openpyxl joins
    the runs, drops ``x005F_`` from shared strings, and the extractor decodes the escapes.
    ``final``: the element ended (no text follows)."""

    def __init__(self, text: str, runs: list[int], final: bool) -> None:
        self.text, self.runs, self.final = text, runs, final
        self.spans: list[tuple[list[int], int]] = []  # (starts, length) of spans no cut may enter
        self.removed: list[int] = []  # where "x005F_" starts
        self.joined: list[int] = []  # escapes once "x005F_" is removed: where they start there
        if "_x" not in text and "x005F_" not in text:
            return
        bounds = [*runs, len(text)]
        self.removed = [match.start() for match in _X005F.finditer(text)]
        self.spans = [
            ([match.start() for match in _ESCAPE.finditer(text)], 7),
            ([match.start() for a, b in zip(bounds, bounds[1:]) for match in _ESCAPE.finditer(text, a, b)], 7),
            (self.removed, 6),
        ]
        self.joined = [match.start() for match in _ESCAPE.finditer(text.replace("x005F_", ""))]

    def snap(self, k: int) -> int:
        """The first position from ``k`` where a cut leaves every reader the same decoded
        prefix: not inside an escape as any of them sees it, nor inside an ``x005F_``."""
        moved = bool(self.spans)
        while moved:
            moved = False
            for starts, length in self.spans:
                if _inside(k, starts, length):
                    k, moved = starts[bisect_left(starts, k) - 1] + length, True
            if _inside(k - 6 * bisect_left(self.removed, k), self.joined, 7):
                k, moved = k + 1, True
        # openpyxl's view after the cut: text dropping "x005F_" may leave too little of it known
        # to see whether an escape spans the cut (the last 5 characters may start one more).
        after = len(self.text) - k - 6 * (len(self.removed) - bisect_left(self.removed, k)) - 5
        if self.spans and not self.final and after < 7:
            return len(self.text) + 1
        return k

    def kept(self, k: int) -> int:
        """The fewest characters surviving hygiene any reader finds in ``text[:k]``."""
        head = self.text[:k].replace("\r\n", "\n")
        counts = [_survivors(head)]
        if "x005F_" in head:
            counts.append(_survivors(head.replace("x005F_", "")))
        if "_x" in head and len(self.runs) > 1:
            bounds = [run for run in self.runs if run < k] + [k]
            counts.append(sum(_survivors(self.text[a:b].replace("\r\n", "\n")) for a, b in zip(bounds, bounds[1:])))
        return min(counts)


def _inside(k: int, starts: list[int], length: int) -> bool:
    """Whether ``k`` falls strictly inside one of the spans starting at ``starts``."""
    index = bisect_left(starts, k) - 1  # the last span starting before k
    return index >= 0 and starts[index] + length > k


class _Cutter:
    """One element (``<si>`` or ``<c>``) read from its start tag. Without a writer: whether it
    must be cut. With one: writes it, cut or not."""

    def __init__(self, source: _Source, part: Part, writer: Optional[IO[bytes]]) -> None:
        self.source, self.part, self.writer = source, part, writer
        self.tokens = _Tokens(source)
        self.digest = hashlib.blake2b(digest_size=16)
        self.text: list[str] = []  # decoded text of the counted elements so far
        self.size = 0  # its length
        self.runs: list[int] = []  # where each counted element's text starts
        self.pending: list[tuple[int, bytes, int, int]] = []  # (kind, raw, text start, text end)
        self.pending_bytes = 0
        self.stack: list[bytes] = []  # open elements (qualified names) at the first pending token
        self.in_cdata = False  # whether the first pending token is inside a CDATA section
        self.open: list[bytes] = []  # open elements now
        self.counting = False
        self.target = KEEP  # no cut can come earlier
        self.check_at = KEEP + _LOOKAHEAD
        self.string_cell = False
        self.content = 0  # bytes of the element's content

    def run(self) -> Optional[int]:
        """None if the element is left as it is; else the size of its content (bytes)."""
        try:
            first = self.tokens.next()
            if first is None or first[0] != _START or _qualified(first[1]) != self.part.prefix + self.part.root:
                if first is not None:
                    self._write(first[1])
                return None
            self._write(first[1])
            self.string_cell = self.part.root == b"c" and _attribute_type(first[1]) == b"str"
            self.open = [_qualified(first[1])]
            self.stack = list(self.open)
            return self._read()
        except _Unsupported as exc:
            logger.debug("overlong text: %s: an element left as it is (%s)", self.part.member, exc)
            self._flush(len(self.pending))
            return None

    def _read(self) -> Optional[int]:
        while True:
            token = self.tokens.next()
            if token is None:
                raise _Unsupported("unterminated element")
            kind, raw = token
            if kind == _END and len(self.open) == 1:  # the element ends
                cut = self._decide(forced=False, final=True) if self.size > self.target else None
                if cut is not None:
                    return self._cut(cut, ended=True)
                self._flush(len(self.pending))
                self._write(raw)
                return None
            self._hash(raw)
            self._track(kind, raw)
            if self.size >= self.check_at or self.pending_bytes > _PENDING_BYTES \
                    or len(self.pending) > _PENDING_TOKENS:
                forced = self.size < self.check_at
                cut = self._decide(forced)
                if cut is not None:
                    return self._cut(cut)
                if forced:
                    raise _Unsupported("markup before the cut")

    def _track(self, kind: int, raw: bytes) -> None:
        start = self.size
        if kind == _START:
            self.open.append(_qualified(raw))
            if len(self.open) > _MAX_DEPTH:
                raise _Unsupported("depth")
            self.counting = self._counted()
            if self.counting:
                self.runs.append(self.size)
        elif kind == _END:
            self.open.pop()
            self.counting = False
        elif kind in (_TEXT, _CDATA_TEXT) and self.counting:
            text = _decode(raw) if kind == _TEXT else _decode_literal(raw)
            self.text.append(text)
            self.size += len(text)
        self.pending.append((kind, raw, start, self.size))
        self.pending_bytes += len(raw)
        self._flush_ready()  # everything before the earliest possible cut is written as it comes

    def _counted(self) -> bool:
        """Whether the element just opened holds text of the cell: ``t`` in ``si`` / ``is``
        (possibly in a run ``r``), ``v`` of a formula string cell."""
        names = [name.rpartition(b":")[2] for name in self.open]
        if self.part.root == b"si":
            return names in ([b"si", b"t"], [b"si", b"r", b"t"])
        if names in ([b"c", b"is", b"t"], [b"c", b"is", b"r", b"t"]):
            return True
        return self.string_cell and names == [b"c", b"v"]

    def _decide(self, forced: bool, final: bool = False) -> Optional[int]:
        """Where to cut, if the text so far shows it: the first position from ``target`` (a
        whole character, entity and escape for every reader) where every reader keeps
        :data:`KEEP` characters (a binary search: what they keep grows with the position).
        Past :data:`WINDOW` characters (or too much markup held), the last such position."""
        text = "".join(self.text)
        self.text = [text]
        views = _Views(text, self.runs, final)
        # An escape may still close after the text so far: cuts are checked up to here. At the
        # element's end, a cut must drop something.
        last = len(text) - 1 if final else len(text) - _LOOKAHEAD

        def enough(k: int) -> bool:
            stable = views.snap(k)
            return stable > last or views.kept(stable) >= KEEP

        if forced or len(text) > WINDOW:
            cut = views.snap(max(self.target, last - 4 * _LOOKAHEAD))
            cut = cut if cut <= last else views.snap(self.target)
            return cut if cut <= last else None
        probe = views.snap(max(self.target, last - 2 * _LOOKAHEAD))  # most often, all fall short
        if probe <= last and views.kept(probe) < KEEP:
            self.target = max(self.target, probe + KEEP - views.kept(probe))
        low, high = self.target, last + 1
        while low < high:
            middle = (low + high) // 2
            if enough(middle):
                high = middle
            else:
                low = middle + 1
        cut = views.snap(low) if low <= last else last + 1
        if cut <= last:
            return cut
        if low > self.target:  # the text up to last keeps too little: the cut is further on
            before = views.snap(low - 1)
            self.target = max(self.target, before + KEEP - views.kept(before))
        self.check_at = max(self.target, len(text) + len(text) // 4) + _LOOKAHEAD
        self._flush_ready()
        return None

    def _flush_ready(self) -> None:
        """Write the pending tokens no cut (at ``target`` or later) can drop."""
        ready = 0
        for _, _, begin, end in self.pending:
            if end > self.target or (begin == end and begin >= self.target):
                break
            ready += 1
        self._flush(ready)

    def _cut(self, k: int, ended: bool = False) -> Optional[int]:
        """Write the element cut at ``k`` (text position), reading the rest of it unless it
        ``ended`` already. Returns its content size (bytes)."""
        if self.writer is None:
            return self.content
        head = []
        stack, inside_cdata = list(self.stack), self.in_cdata
        for kind, raw, begin, end in self.pending:
            if begin == end:  # markup, or text that does not count
                if begin >= k:
                    break
                head.append(raw)
                _apply(stack, kind, raw)
                inside_cdata = _cdata(kind, inside_cdata)
                continue
            if begin >= k:
                break
            keep = raw if end <= k else raw[:_raw_length(raw, k - begin, kind == _CDATA_TEXT)]
            head.append(keep)
            if end >= k:
                break
        self.pending, self.pending_bytes = [], 0
        if not ended:
            self._skip_rest()
        tail = (b"]]>" if inside_cdata else b"") + b"~" + self.digest.hexdigest().encode()
        closers = b"".join(b"</" + name + b">" for name in reversed(stack))
        self._write(b"".join(head) + tail + closers)
        return self.content

    def _skip_rest(self) -> None:
        """Read to the end of the element, its bytes only hashed. Its start is written already:
        a failure here is the workbook's (unterminated XML), raised as :class:`ValueError`."""
        try:
            if self.part.regular and self.tokens.inside is None:
                self._skip_regular()
            else:
                self._skip_tokens()
        except _Unsupported as exc:
            raise ValueError(f"{self.part.member}: {exc}") from None

    def _skip_tokens(self) -> None:
        while True:
            token = self.tokens.next()
            if token is None:
                raise _Unsupported("unterminated element")
            kind, raw = token
            if kind == _END and len(self.open) == 1:
                return
            self._hash(raw)
            if kind == _START:
                self.open.append(_qualified(raw))
            elif kind == _END:
                self.open.pop()

    def _skip_regular(self) -> None:
        """Plain elements only (no comments or CDATA in the part): byte searches for the
        element's own start and end tags."""
        source = self.source
        name = re.escape(self.part.prefix + self.part.root)
        pattern = re.compile(rb"<(/?)" + name + rb"(?=[\s/>])[^>]*>")
        depth = 1
        while True:
            match = pattern.search(source.buffer, source.at)
            if match is None:
                keep = max(source.at, len(source.buffer) - _MAX_TAG)
                self._hash(source.take(keep) if keep > source.at else b"")
                if not source.more():
                    raise _Unsupported("unterminated element")
                continue
            self._hash(source.take(match.start()))
            if match.group(1):
                depth -= 1
                if depth == 0:
                    source.take(match.end())
                    return
            elif not match.group().endswith(b"/>"):
                depth += 1
            self._hash(source.take(match.end()))

    def _hash(self, raw: bytes) -> None:
        self.content += len(raw)
        if self.writer is not None:
            self.digest.update(raw)

    def _flush(self, count: int) -> None:
        for kind, raw, _, _ in self.pending[:count]:
            self._write(raw)
            _apply(self.stack, kind, raw)
            self.in_cdata = _cdata(kind, self.in_cdata)
            self.pending_bytes -= len(raw)
        del self.pending[:count]

    def _write(self, raw: bytes) -> None:
        if self.writer is not None:
            self.writer.write(raw)


def _qualified(tag: bytes) -> bytes:
    match = _NAME.match(tag)
    return match.group(1) if match else b""


def _attribute_type(tag: bytes) -> bytes:
    match = _TYPE.search(tag)
    return match.group(1) if match else b""


def _apply(stack: list[bytes], kind: int, raw: bytes) -> None:
    """Keep ``stack`` (open elements) up to date with a token."""
    if kind == _START:
        stack.append(_qualified(raw))
    elif kind == _END and stack:
        stack.pop()


def _cdata(kind: int, inside: bool) -> bool:
    return True if kind == _CDATA_OPEN else False if kind == _CDATA_CLOSE else inside
