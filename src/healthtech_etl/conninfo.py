"""A ``postgresql://`` URI read as libpq reads it (``conninfo_uri_parse_options``, fe-connect.c):
``user[:password]@`` up to the first ``@`` met before any ``/``; hosts ``h[:port]`` (``[IPv6]``)
separated by commas; ``/dbname``; ``?key=value&...`` (a later value wins, ``ssl=true`` and
``requiressl`` become ``sslmode``); each part stripped of spaces at its ends (libpq 18), then
percent-decoded (as UTF-8; ``%00`` refused). A space inside a part is kept (libpq 18 refuses it).

One reading libpq lacks: when libpq's split would leave an unencoded ``@`` in the host, port or
database name (``postgresql://u:pa/ss@host/db``, ``u:p@ss@host``), the credentials run to the
first ``@`` after which none is left there. Refused as ambiguous: credentials holding a ``?`` that
could start a query (``postgresql://host?password=p@ss``: libpq's user would be ``host?password=p``).
Errors name the part, never quote the URI."""

from typing import Optional
from urllib.parse import unquote

from .errors import ConfigError

PREFIXES = ("postgresql://", "postgres://")
SUPPORTED = ("host", "port", "dbname", "user", "password", "sslmode", "sslrootcert", "connect_timeout")
# libpq settings that change neither where nor how securely a run connects: read and left unused.
IGNORED = ("application_name", "fallback_application_name", "client_encoding", "keepalives", "keepalives_idle",
           "keepalives_interval", "keepalives_count", "tcp_user_timeout")


def parse_uri(url: str, source: str = "DATABASE_URL", strict: bool = True) -> dict[str, str]:
    """The keywords libpq's ``PQconninfoParse`` gives for ``url`` (no defaults filled in). ``strict``:
    a query keyword outside SUPPORTED and IGNORED is a ConfigError naming its position, not its text."""
    prefix = next((p for p in PREFIXES if url.startswith(p)), None)
    if prefix is None:
        raise ConfigError(f"{source} must start with postgresql:// or postgres://")
    if not url.isascii():
        try:
            url.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{source} is not UTF-8 text") from None
    rest = url[len(prefix):]
    userinfo, location = _split_credentials(rest)
    if userinfo and "?" in userinfo and _query_like(rest.partition("?")[2]):
        raise ConfigError(f"{source} is ambiguous: a ? before the @ may start the query or be part of the user "
                          "name or password - percent-encode ? there as %3F, or @ in a query value as %40")
    values: dict[str, str] = {}
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        if user:
            values["user"] = _decode(user, "user name", source)
        if colon and password:
            values["password"] = _decode(password, "password", source)
    hosts, ports, end = _hosts(location, source)
    if ",".join(hosts):
        values["host"] = _decode(",".join(hosts), "host", source)
    if ",".join(ports):
        values["port"] = _decode(",".join(ports), "port", source)
    query = None
    if location[end:end + 1] == "/":
        dbname, mark, tail = location[end + 1:].partition("?")
        if dbname:
            values["dbname"] = _decode(dbname, "database name", source)
        query = tail if mark else None
    elif location[end:end + 1] == "?":
        query = location[end + 1:]
    _params(query or "", values, source, strict)
    for key, value in values.items():  # bytes libpq keeps, but that are no text (the last value counts)
        if any("\udc80" <= char <= "\udcff" for char in key + value):
            part = f"the {key}" if key in SUPPORTED + IGNORED else "a query parameter"
            raise ConfigError(f"{source} is not a valid URL: {part} is not UTF-8 once percent-decoded")
    return values


def _clean(location: str) -> bool:
    """No ``@`` in the hosts, ports or database name (the part before the query)."""
    return "@" not in location.partition("?")[0]


def _split_credentials(rest: str) -> tuple[Optional[str], str]:
    at, slash = rest.find("@"), rest.find("/")
    if at >= 0 and (slash < 0 or at < slash) and _clean(rest[at + 1:]):
        return rest[:at], rest[at + 1:]
    if at < 0 or (at > slash >= 0 and _clean(rest)):
        return None, rest
    # An unencoded "@" or "/" in the credentials: libpq's split would put "@" in the location.
    at = next(i for i, char in enumerate(rest) if char == "@" and _clean(rest[i + 1:]))
    return rest[:at], rest[at + 1:]


def _query_like(text: str) -> bool:
    """Whether ``text`` reads as query parameters healthtech-etl knows (``password=x@y&...``)."""
    pairs = [pair.split("=") for pair in text.split("&")]
    return all(len(pair) == 2 and unquote(pair[0]).strip(" ") in SUPPORTED + IGNORED + ("ssl", "requiressl")
               for pair in (pairs[:-1] if len(pairs) > 1 and pairs[-1] == [""] else pairs))


def _hosts(location: str, source: str) -> tuple[list[str], list[str], int]:
    """``host[:port]`` entries up to the ``/`` or ``?`` that ends them (its index is returned)."""
    hosts: list[str] = []
    ports: list[str] = []
    at = 0
    while True:
        if location[at:at + 1] == "[":
            close = location.find("]", at)
            if close < 0 or close == at + 1 or location[close + 1:close + 2] not in ("", ":", "/", "?", ","):
                raise ConfigError(f"{source} is not a valid URL: an IPv6 host must be written [address]")
            hosts.append(location[at + 1:close])
            at = close + 1
        else:
            end = _find_any(location, ":/?,", at)
            hosts.append(location[at:end])
            at = end
        port = ""
        if location[at:at + 1] == ":":
            end = _find_any(location, "/?,", at + 1)
            port, at = location[at + 1:end], end
        ports.append(port)
        if location[at:at + 1] != ",":
            return hosts, ports, at
        at += 1


def _find_any(text: str, chars: str, start: int) -> int:
    return next((i for i in range(start, len(text)) if text[i] in chars), len(text))


def _params(query: str, values: dict[str, str], source: str, strict: bool) -> None:
    pairs = query.split("&")
    if pairs[-1] == "":  # libpq reads up to a last "&" (and "?" alone): nothing after it
        pairs.pop()
    for number, pair in enumerate(pairs, start=1):
        if pair.count("=") != 1:
            raise ConfigError(f"{source} is not a valid URL: query parameter {number} is not one key=value")
        key, value = (_decode(part, f"query parameter {number}", source) for part in pair.split("="))
        if key == "ssl" and value == "true":  # JDBC's spelling, as libpq reads it
            key, value = "sslmode", "require"
        elif key == "requiressl":
            key, value = "sslmode", "require" if value.startswith("1") else "prefer"
        if strict and key not in SUPPORTED + IGNORED:
            raise ConfigError(f"{source}: query parameter {number} is not one healthtech-etl supports "
                              f"(it reads {', '.join(SUPPORTED)})")
        values[key] = value


def _decode(text: str, part: str, source: str) -> str:
    """Percent-decoding as libpq does it: ``%`` needs two hex digits, ``%00`` is refused."""
    text = text.strip(" ")
    if "%" not in text:
        return text
    pieces = text.split("%")
    data = bytearray(pieces[0].encode("utf-8"))
    for piece in pieces[1:]:
        digits = piece[:2]
        if len(digits) < 2 or not all(char in "0123456789abcdefABCDEF" for char in digits) or digits == "00":
            raise ConfigError(f"{source} is not a valid URL: the {part} has a % not followed by two hex digits "
                              "(other than 00): write % itself as %25")
        data.append(int(digits, 16))
        data += piece[2:].encode("utf-8")
    return data.decode("utf-8", "surrogateescape")  # checked once the last value of each key is known
