import importlib.util
import json
import ssl
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from healthtech_etl.conninfo import IGNORED, SUPPORTED, parse_uri
from healthtech_etl.db_config import SSL_MODES, DbConfig, load_dotenv
from healthtech_etl.errors import ConfigError
from healthtech_etl.redact import redact


def test_tcp_url():
    config = DbConfig.from_url("postgresql://etl:s%40cret@db.example.com:6543/clinic?sslmode=require")
    assert (config.user, config.password, config.host, config.port, config.database) == (
        "etl", "s@cret", "db.example.com", 6543, "clinic")
    assert config.sslmode == "require" and config.unix_socket_dir is None
    context = config.ssl_context()
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_NONE


def test_unix_socket_url():
    config = DbConfig.from_url("postgresql://postgres:@/postgres?host=/tmp/pg sock")
    assert config.unix_socket_dir == "/tmp/pg sock"
    assert config.ssl_context() is None


def test_bad_urls():
    with pytest.raises(ConfigError, match="postgresql://"):
        DbConfig.from_url("mysql://x@y/z")
    with pytest.raises(ConfigError, match="sslmode"):
        DbConfig.from_url("postgresql://x@y/z?sslmode=bogus")
    with pytest.raises(ConfigError, match="CA bundle"):
        DbConfig.from_url("postgresql://x@y/z?sslmode=verify-full")


def test_env_precedence_and_seed_variables():
    assert DbConfig.from_env({}) is None
    seed = DbConfig.from_env({"DB_HOST": "h", "DB_PORT": "5433", "DB_NAME": "n", "DB_USER": "u", "DB_PASSWORD": "p"})
    assert (seed.host, seed.port, seed.database, seed.user, seed.password) == ("h", 5433, "n", "u", "p")
    url = DbConfig.from_env({"DATABASE_URL": "postgresql://a@b/c", "DB_HOST": "h"})
    assert (url.host, url.database) == ("b", "c")
    with pytest.raises(ConfigError, match="DB_PORT"):
        DbConfig.from_env({"DB_HOST": "h", "DB_PORT": "x"})


def test_rds_secret():
    secret = {"username": "etl", "password": "pw", "host": "db.rds.amazonaws.com", "port": 5432, "dbname": "clinic",
              "engine": "postgres"}
    config = DbConfig.from_secret(secret)
    assert (config.host, config.database, config.sslmode) == ("db.rds.amazonaws.com", "clinic", "require")
    assert DbConfig.from_secret({**secret, "host": "/tmp/sock"}).unix_socket_dir == "/tmp/sock"
    with pytest.raises(ConfigError, match="password"):
        DbConfig.from_secret({**secret, "password": ""})
    with pytest.raises(ConfigError, match="mysql"):
        DbConfig.from_secret({**secret, "engine": "mysql"})


def test_describe_never_shows_the_password():
    config = DbConfig.from_url("postgresql://etl:TopSecret123@db:5432/clinic")
    assert "TopSecret123" not in config.describe()
    assert "TopSecret123" not in repr(config.describe())
    assert "etl@db:5432/clinic" in config.describe()


def test_dotenv_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nDOCTORS_INPUT=data/d.xlsx\nexport DB_USER='etl'\nDB_NAME=\"clinic\"\nBROKEN\n")
    merged = load_dotenv(env_file, environ={"DB_NAME": "override"})
    assert merged["DOCTORS_INPUT"] == "data/d.xlsx"
    assert merged["DB_USER"] == "etl"
    assert merged["DB_NAME"] == "override"
    assert load_dotenv(tmp_path / "missing.env", environ={"A": "1"}) == {"A": "1"}


def test_url_round_trip():
    for url in ("postgresql://etl:p%40ss@db:6543/clinic?sslmode=require", "postgresql://postgres@/x?host=/tmp/s",
                "postgresql://postgres@/x?host=/tmp/s&port=6000"):
        config = DbConfig.from_url(url)
        assert DbConfig.from_url(config.url(), source=config.source) == config


def test_unencoded_password_with_slash_is_a_password_not_a_path():
    config = DbConfig.from_url("postgresql://u:1234/secret@host/db")
    assert (config.user, config.password, config.host, config.database) == ("u", "1234/secret", "host", "db")
    assert "1234" not in config.describe()


@pytest.mark.parametrize("url, message", [
    ("postgresql://u:pw@h/db?connect_timeout=abc", "connect_timeout must be a whole number"),
    ("postgresql://u:Sup3rSecret@h:notaport/db", "not a valid URL"),
    ("postgresql://u:Sup3rSecret@h:99999/db", "not a valid URL"),
    ("postgresql://u:pw@h/db?port=0", "port must be between 1 and 65535"),
    ("Sup3rSecret", "must start with postgresql://"),
])
def test_malformed_urls_are_config_errors_without_the_url(url, message):
    with pytest.raises(ConfigError, match=message) as caught:
        DbConfig.from_url(url)
    assert "Sup3rSecret" not in str(caught.value) and "pw" not in str(caught.value)


def test_settings_from_dotenv_are_named(tmp_path):
    assert DbConfig.from_env({"DATABASE_URL": "postgresql://a@b/c"}, {"DATABASE_URL"}).source == "DATABASE_URL in .env"
    config = DbConfig.from_env({"DB_HOST": "h", "DB_PASSWORD": "p"}, {"DB_HOST"})
    assert config.from_dotenv and "in .env" in config.describe()
    assert not DbConfig.from_env({"DB_HOST": "h"}, ()).from_dotenv


@pytest.mark.parametrize("content, message", [
    (b"DB_HOST=h\nDB_PASSWORD=caf\xe9\n", "not UTF-8"),
])
def test_bad_dotenv_is_a_config_error(tmp_path, content, message):
    env_file = tmp_path / ".env"
    env_file.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_dotenv(env_file, environ={})
    directory = tmp_path / "dir.env"
    directory.mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_dotenv(directory, environ={})


# ------------------------------------------------------------------ URLs read as libpq reads them

def test_the_issue_url_keeps_its_password_in_the_query():
    config = DbConfig.from_url("postgresql://admin@127.0.0.1:1/db?password=Summer@2025")
    assert (config.user, config.password, config.host, config.port, config.database) == (
        "admin", "Summer@2025", "127.0.0.1", 1, "db")
    assert config.describe() == "admin@127.0.0.1:1/db (from DATABASE_URL)"
    assert "2025" not in repr(config) and "Summer" not in repr(config)


@pytest.mark.parametrize("url, expected", [
    ("postgresql://[::1]:6543/d", {"host": "::1", "port": 6543, "database": "d"}),
    ("postgres://u:p@%2Fvar%2Frun%2Fpg/d", {"unix_socket_dir": "/var/run/pg", "host": None, "password": "p"}),
    ("postgresql://u%3Ax%40y:p%3Aq%2Fr@h/d%3Fe", {"user": "u:x@y", "password": "p:q/r", "database": "d?e"}),
    ("postgresql://u:a:b#c@h/d#e", {"password": "a:b#c", "database": "d#e"}),
    ("postgresql://h/d?ssl=true", {"sslmode": "require"}),
    ("postgresql://h/d?requiressl=1&dbname=x&user=v&port=7", {"sslmode": "require", "database": "x", "user": "v",
                                                              "port": 7}),
    ("postgresql://h/d?pass%77ord=a+b%20c&application_name=etl&", {"password": "a+b c"}),
    ("postgresql://h:/d?host=other&port=", {"host": "other", "port": 5432}),
    ("postgresql://u:p%40ss/w@h/d", {"password": "p@ss/w", "host": "h"}),  # unencoded "/": the password's
    ("postgresql://a@b:p@ss@h/d", {"user": "a@b", "password": "p@ss", "host": "h"}),
    ("postgresql://u:pa?ss@h/db?sslmode=require", {"password": "pa?ss", "host": "h", "sslmode": "require"}),
    ("postgresql://h:7/?password=a@b", {"host": "h", "port": 7, "password": "a@b", "database": "postgres"}),
])
def test_url_shapes(url, expected):
    config = DbConfig.from_url(url)
    assert {key: getattr(config, key) for key in expected} == expected
    assert DbConfig.from_url(config.url()) == config


@pytest.mark.parametrize("url, message", [
    ("postgresql://h1,h2:5433/d", "several hosts"),
    ("postgresql://h/d?port=5432,5433", "several hosts"),
    ("postgresql://h/d?host=%40abstract", "abstract unix socket"),
    ("postgresql://u:Sup3rSecret@h/d?sslcert=/c.pem", "query parameter 1 is not one healthtech-etl supports"),
    ("postgresql://h/d?sslmode=require&Sup3rSecret=x", "query parameter 2 is not one"),
    ("postgresql://h/d?password=Sup3r&Secret", "query parameter 2 is not one key=value"),
    ("postgresql://u:Sup3r%zzSecret@h/d", "the password has a % not followed by two hex digits"),
    ("postgresql://u:Sup3r%00Secret@h/d", "the password has a %"),
    ("postgresql://u:Sup3r%FFSecret@h/d", "the password is not UTF-8"),
    ("postgresql://h/d?application_name=Sup3r%FFSecret", "the application_name is not UTF-8"),
    ("postgresql://h/d?Sup3r%FFSecret=x", "query parameter 1 is not one"),
    ("postgresql://u:Sup3r\udcffSecret@h/d", "not UTF-8 text"),
    ("postgresql://[::1/d?password=Sup3rSecret", "IPv6 host"),
    ("postgresql://h?password=Sup3r@Secret", "ambiguous"),  # libpq: user "h?password=Sup3r", host "Secret"
    ("postgresql://h?pass%77ord=Sup3r@Secret", "ambiguous"),
    ("postgresql://u:Sup3rSecret@h/d\n", "control character"),
    ("postgresql://h/d?sslmode=allow&password=Sup3rSecret", "sslmode must be one of"),
    ("POSTGRESQL://u:Sup3rSecret@h", "got scheme 'POSTGRESQL'"),
    ("u:Sup3rSecret://h", "got scheme none"),
])
def test_unusable_urls_are_one_line_config_errors(url, message):
    with pytest.raises(ConfigError, match=message) as caught:
        DbConfig.from_url(url)
    assert "\n" not in str(caught.value) and "Sup3r" not in str(caught.value) and "Secret" not in str(caught.value)


def test_url_round_trip_keeps_awkward_values():
    config = DbConfig(user="a b@c", password="p&q=r s+%", host="fe80::1%eth0", database="d b/é",
                      sslmode="verify-ca", sslrootcert="/tmp/ca dir+x/ca.pem")
    assert DbConfig.from_url(config.url(), source=config.source) == config
    assert "[fe80::1%25eth0]" in config.describe()


# No-leak property: a password (holding a character no message has) placed in a URL as users
# write them - percent-encoded or not, in the credentials or the query - never shows up in
# describe(), repr, an error or redact()'s output, whether the URL is accepted or not.
_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))


@st.composite
def _passwords(draw):
    head, tail = draw(st.text(_PRINTABLE, max_size=10)), draw(st.text(_PRINTABLE, max_size=10))
    return head + draw(st.sampled_from("§ü€中")) + tail


@given(password=_passwords(), place=st.sampled_from(["raw", "encoded", "query", "query-raw", "key-encoded"]),
       host=st.sampled_from(["db.example.com", "127.0.0.1", "[::1]", ""]), tail=st.sampled_from(
           ["/clinic", "/clinic?sslmode=require", ":6543/clinic?connect_timeout=3", "?host=/tmp/s", ""]))
def test_the_password_never_shows(password, place, host, tail):
    separator = "&" if "?" in tail else "?"
    url = {"raw": f"postgresql://etl:{password}@{host}{tail}",
           "encoded": f"postgresql://etl:{quote(password, safe='')}@{host}{tail}",
           "query": f"postgresql://etl@{host}{tail}{separator}password={quote(password, safe='')}",
           "query-raw": f"postgresql://etl@{host}{tail}{separator}password={password}",
           "key-encoded": f"postgresql://etl@{host}{tail}{separator}pass%77ord={quote(password, safe='')}"}[place]
    shown = [redact(f"cannot use {url} (refused)"), json.loads(redact(json.dumps({"message": f"at {url}: no"})))["message"]]
    try:
        config = DbConfig.from_url(url)
        shown += [config.describe(), repr(config)]
    except ConfigError as exc:
        shown.append(str(exc))
    for text in shown:
        assert password not in text and quote(password, safe="") not in text


@given(user=st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters=":%?"), min_size=1),
       password=st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="%?"), min_size=1),
       host=st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True), port=st.integers(1, 65535),
       database=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True))
def test_unencoded_credentials_are_read_as_meant(user, password, host, port, database):
    """Users paste passwords unencoded: "/", "@", ":" and "#" in them are the password's (libpq
    itself would make part of it the host or the database name). Spaces at their ends are trimmed
    (libpq 18): an edge space is written %20."""
    assume(user == user.strip(" ") and password == password.strip(" "))
    config = DbConfig.from_url(f"postgresql://{user}:{password}@{host}:{port}/{database}?sslmode=disable")
    assert (config.user, config.password, config.host, config.port, config.database) == (
        user, password, host, port, database)


# ------------------------------------------------------------------ the reference: libpq itself
# psycopg's conninfo_to_dict is libpq's PQconninfoParse. Generated URIs: user, password, hosts
# ([IPv6], socket directories, comma lists), ports, database, query parameters, every part
# percent-encoded at random (upper or lower case hex) beyond what it must encode, then possibly
# damaged by a stray "%", "[", "&", "=", "?"... (never "@" or "/": an unencoded one there is
# the reading libpq lacks, tested above). Where we part from libpq, we only refuse: a "?" in
# libpq's credentials that may start a query, a space inside a part (libpq 18 refuses it).
_KEYS = ["host", "port", "dbname", "user", "password", "sslmode", "sslrootcert", "connect_timeout", "ssl",
         "requiressl", "application_name", "keepalives", "client_encoding", "hostaddr", "service", "sslcert",
         "options", "target_session_attrs", "bogus"]
_VALUES = {"port": ["5432", "1", "0", "65536", "x", ""], "connect_timeout": ["3", "0", "3601", "abc"],
           "sslmode": ["disable", "prefer", "require", "verify-ca", "verify-full", "allow", ""],
           "ssl": ["true", "false"], "requiressl": ["1", "0", "x"], "host": ["h2", "/tmp/sock", "@abs", "a,b", ""],
           "sslrootcert": ["/tmp/ca.pem", ""]}
_DAMAGE = ["%", "%0", "%00", "%zz", "%C3", "%c3%a9", "[", "]", "&", "=", "&&", "?", ":", ",", "#", " "]


def _encoded(text, must):
    """``text`` with each character percent-encoded at random (always those in ``must``)."""
    def encode(char, how):
        if how == 0 and char not in must + "%":
            return char
        return "".join(f"%{byte:02X}" if how < 2 else f"%{byte:02x}" for byte in char.encode("utf-8"))
    return st.lists(st.integers(0, 2), min_size=len(text), max_size=len(text)).map(
        lambda hows: "".join(encode(char, how) for char, how in zip(text, hows)))


def _part(must, alphabet=_PRINTABLE, max_size=8):
    return st.text(alphabet, max_size=max_size).flatmap(lambda text: _encoded(text, must))


_HOSTS = st.one_of(_part(":/?,@[", st.sampled_from("abcz09.-_é"), 12), st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
                   st.sampled_from(["/tmp/s", "/var/run/postgresql"]).flatmap(lambda path: _encoded(path, "/")))
_PORTS = st.one_of(st.integers(0, 70000).map(str), st.sampled_from(["", "x", "1:2"])).flatmap(
    lambda port: _encoded(port, "/?,@"))
_PARAMS = st.sampled_from(_KEYS).flatmap(lambda key: st.tuples(
    _encoded(key, "&="), st.sampled_from(_VALUES[key]).flatmap(lambda v: _encoded(v, "&=")) if key in _VALUES
    else _part("&=")))


@st.composite
def _uris(draw):
    userinfo = ""
    if draw(st.booleans()):
        userinfo = draw(_part(":@/")) + (":" + draw(_part("@/")) if draw(st.booleans()) else "") + "@"
    hosts = draw(st.lists(st.tuples(_HOSTS, st.none() | _PORTS), min_size=1, max_size=3))
    netloc = ",".join(host + ("" if port is None else f":{port}") for host, port in hosts)
    path = "/" + draw(_part("?@")) if draw(st.booleans()) else ""
    params = draw(st.lists(_PARAMS, max_size=4))
    query = "?" + "&".join(f"{key}={value}" for key, value in params) + draw(st.sampled_from(["", "&"])) \
        if params or draw(st.booleans()) else ""
    url = draw(st.sampled_from(["postgresql://", "postgres://"])) + userinfo + netloc + path + query
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(url.index("://") + 3, len(url)))
        url = url[:at] + draw(st.sampled_from(_DAMAGE)) + url[at:]
    return url


def _libpq(url):
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.conninfo.conninfo_to_dict(url)
    except UnicodeDecodeError:  # not UTF-8 once decoded
        return None
    except psycopg.ProgrammingError as exc:  # refused; libpq 18 refuses a space inside a part, we keep it
        return "space inside" if "unexpected spaces" in str(exc) else None


def _libpq_keywords():
    psycopg = pytest.importorskip("psycopg")
    return {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}


def _usable(values):
    """Whether a run can use what libpq read (the rules of DbConfig.from_url, stated again)."""
    host, port = values.get("host") or "localhost", values.get("port") or "5432"
    timeout, sslmode = values.get("connect_timeout", "10"), values.get("sslmode", "prefer")
    return (set(values) <= set(SUPPORTED + IGNORED) and "," not in host + port and not host.startswith("@")
            and port.isdigit() and 1 <= int(port) <= 65535 and timeout.strip().lstrip("+").isdigit()
            and 1 <= int(timeout) <= 3600 and sslmode in SSL_MODES
            and (sslmode not in ("verify-ca", "verify-full") or bool(values.get("sslrootcert"))))


@pytest.mark.skipif(importlib.util.find_spec("psycopg") is None, reason="needs psycopg (requirements/dev.txt)")
@settings(max_examples=1500)
@given(url=_uris())
def test_urls_are_read_as_libpq_reads_them(url):
    expected = _libpq(url)
    if expected == "space inside":
        return
    try:
        values = parse_uri(url, strict=False)
    except ConfigError:
        values = None
    if values is not None and not set(values) <= _libpq_keywords():  # libpq refuses unknown keywords
        values = None
    rest = url.partition("://")[2]
    at, slash = rest.find("@"), rest.find("/")
    if 0 <= at and "?" in rest[:at] and (slash < 0 or at < slash) and values is None:
        return  # libpq's credentials hold a "?" that may start a query: refused as ambiguous
    assert values == expected
    try:
        config = DbConfig.from_url(url)
    except ConfigError as exc:
        assert expected is None or not _usable(expected), exc
        return
    assert expected is not None and _usable(expected)
    host = expected.get("host") or "localhost"
    assert (config.user, config.password, config.database, config.host, config.unix_socket_dir) == (
        expected.get("user") or "postgres", expected.get("password") or None, expected.get("dbname") or "postgres",
        None if host.startswith("/") else host, host if host.startswith("/") else None)
    assert (config.port, config.sslmode, config.sslrootcert) == (
        int(expected.get("port") or 5432), expected.get("sslmode", "prefer"), expected.get("sslrootcert") or None)
    assert _libpq(config.url()) == {key: value for key, value in {
        "user": config.user, "password": config.password, "dbname": config.database, "sslmode": config.sslmode,
        "sslrootcert": config.sslrootcert, "host": config.unix_socket_dir or config.host,
        "port": str(config.port)}.items() if value}
