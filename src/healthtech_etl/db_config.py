"""Where the database is: connection settings from the environment, a ``.env`` file, a
``DATABASE_URL`` or a Secrets Manager JSON document, and the TLS they ask for.

Credentials only ever come from those - never from code or job arguments - and are never
logged: :meth:`DbConfig.describe` is the only text about a connection that reaches a log or an
error. No database driver here (see db.py for connecting).
"""

import os
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from .errors import ConfigError
from .redact import redact

SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PGDATA = ".pgdata"
# Runs whose rejected rows (and report snapshots) the database keeps: --keep-runs / KEEP_RUNS.
DEFAULT_KEEP_RUNS = 30


@dataclass(frozen=True)
class DbConfig:
    """Connection parameters. ``unix_socket_dir`` wins over ``host`` when set."""

    database: str = "postgres"
    user: str = "postgres"
    password: Optional[str] = None
    host: Optional[str] = "localhost"
    port: int = 5432
    unix_socket_dir: Optional[str] = None
    sslmode: str = "prefer"
    sslrootcert: Optional[str] = None
    connect_timeout: int = 10
    source: str = "settings"

    @classmethod
    def from_url(cls, url: str, source: str = "DATABASE_URL") -> "DbConfig":
        """Parse a libpq URI: ``postgresql://user:pw@host:5432/db?sslmode=require`` or
        ``postgresql://user@/db?host=/var/run/postgresql`` (unix socket directory).

        The credentials are everything between ``://`` and the last ``@``, so an unencoded
        password holding ``/`` or ``@`` is still read as a password, never as a host or path.
        Errors never quote the URL (it may hold the password)."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("postgres", "postgresql"):
            shown = scheme if sep else "none"
            raise ConfigError(f"{source} must start with postgresql:// (got scheme {shown!r})")
        userinfo, at, location = rest.rpartition("@")
        if not at:
            userinfo, location = "", rest
        user_text, colon, password_text = userinfo.partition(":")
        try:
            parts = urlsplit(f"{scheme}://{location}")
            query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            host = unquote(parts.hostname) if parts.hostname else None
            url_port = parts.port
        except ValueError as exc:
            raise ConfigError(f"{source} is not a valid URL (host or port unreadable)") from exc
        socket_dir = None
        query_host = query.get("host")
        if query_host:
            if query_host.startswith("/"):
                socket_dir = query_host
            else:
                host = query_host
        port = _int_setting(query.get("port") or url_port or 5432, f"{source} port", 1, 65535)
        if host is None and socket_dir is None:
            host = "localhost"
        config = cls(
            database=unquote(parts.path.lstrip("/")) or query.get("dbname") or "postgres",
            user=unquote(user_text) if user_text else query.get("user", "postgres"),
            password=unquote(password_text) if colon and password_text else query.get("password"),
            host=host,
            port=port,
            unix_socket_dir=socket_dir,
            sslmode=query.get("sslmode", "prefer"),
            sslrootcert=query.get("sslrootcert"),
            connect_timeout=_int_setting(query.get("connect_timeout", 10), f"{source} connect_timeout", 1, 3600),
            source=source,
        )
        config.validate()
        return config

    @classmethod
    def from_env(cls, env: Mapping[str, str], from_dotenv: Collection[str] = ()) -> Optional["DbConfig"]:
        """``DATABASE_URL`` first, then ``DB_HOST``/``DB_PORT``/``DB_NAME``/``DB_USER``/
        ``DB_PASSWORD`` (+ ``DB_SSLMODE``, ``DB_SSLROOTCERT``); None when neither is set.

        ``from_dotenv``: the keys that came from ``.env`` (named in ``source`` and so in errors)."""
        url = env.get("DATABASE_URL", "").strip()
        if url:
            return cls.from_url(url, source="DATABASE_URL in .env" if "DATABASE_URL" in from_dotenv else "DATABASE_URL")
        if not env.get("DB_HOST", "").strip():
            return None
        keys = ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_SSLMODE")
        in_dotenv = any(key in from_dotenv for key in keys if env.get(key))
        source = "DB_HOST/DB_PORT/DB_NAME/DB_USER" + (" in .env" if in_dotenv else "")
        try:
            port = _int_setting(env.get("DB_PORT") or 5432, "DB_PORT", 1, 65535)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from {source})") from exc
        host = env["DB_HOST"].strip()
        config = cls(
            database=env.get("DB_NAME") or "postgres",
            user=env.get("DB_USER") or "postgres",
            password=env.get("DB_PASSWORD") or None,
            host=None if host.startswith("/") else host,
            unix_socket_dir=host if host.startswith("/") else None,
            port=port,
            sslmode=env.get("DB_SSLMODE") or "prefer",
            sslrootcert=env.get("DB_SSLROOTCERT") or None,
            source=source,
        )
        config.validate()
        return config

    @classmethod
    def from_secret(
        cls, secret: Mapping[str, Any], sslmode: str = "require", sslrootcert: Optional[str] = None
    ) -> "DbConfig":
        """Build from the JSON document RDS generates in Secrets Manager
        (``username``, ``password``, ``host``, ``port``, ``dbname``, ``engine``)."""
        missing = [key for key in ("username", "password", "host") if not secret.get(key)]
        if missing:
            raise ConfigError(f"database secret lacks {', '.join(missing)}")
        engine = secret.get("engine", "postgres")
        if engine not in ("postgres", "postgresql", "aurora-postgresql"):
            raise ConfigError(f"database secret is for engine {engine!r}, not PostgreSQL")
        host = str(secret["host"])
        config = cls(
            database=str(secret.get("dbname") or "postgres"),
            user=str(secret["username"]),
            password=str(secret["password"]),
            # A host starting with "/" is a unix socket directory (local stand-ins for RDS).
            host=None if host.startswith("/") else host,
            unix_socket_dir=host if host.startswith("/") else None,
            port=_int_setting(secret.get("port") or 5432, "database secret port", 1, 65535),
            sslmode=sslmode,
            sslrootcert=sslrootcert,
            source="Secrets Manager",
        )
        config.validate()
        return config

    def validate(self) -> None:
        if self.sslmode not in SSL_MODES:
            raise ConfigError(f"sslmode must be one of {', '.join(SSL_MODES)} (got {self.sslmode!r})")
        if self.sslmode in ("verify-ca", "verify-full") and not self.sslrootcert:
            raise ConfigError(f"sslmode={self.sslmode} needs a CA bundle (sslrootcert)")

    def url(self) -> str:
        """A libpq URI for child processes' ``DATABASE_URL``. Contains the password: never log it."""
        auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        query = {"sslmode": self.sslmode}
        if self.sslrootcert:
            query["sslrootcert"] = self.sslrootcert
        if self.unix_socket_dir:
            query["host"] = self.unix_socket_dir
            query["port"] = str(self.port)  # names the socket file (.s.PGSQL.<port>)
            netloc = f"{auth}@"
        else:
            netloc = f"{auth}@{self.host}:{self.port}"
        return f"postgresql://{netloc}/{quote(self.database, safe='')}?{urlencode(query)}"

    def with_database(self, database: str) -> "DbConfig":
        return replace(self, database=database)

    def describe(self) -> str:
        """Where we connect, without the password: safe for logs and error messages."""
        where = f"unix socket {self.unix_socket_dir}" if self.unix_socket_dir else f"{self.host}:{self.port}"
        return f"{self.user}@{where}/{self.database} (from {self.source})"

    @property
    def from_dotenv(self) -> bool:
        return self.source.endswith(" in .env")

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        """The TLS a connection requires, as libpq's ``sslmode`` means it.

        ``require``: encrypted, the server not authenticated - unless a CA bundle is given,
        which makes it ``verify-ca`` (libpq does the same); ``verify-ca``: the server's chain
        must lead to a CA of ``sslrootcert``; ``verify-full``: that, and its certificate must
        name the host we connect to. None for a unix socket and ``disable``/``prefer``.
        Raises :class:`ConfigError` for a CA bundle that cannot be read."""
        if self.unix_socket_dir or self.sslmode in ("disable", "prefer"):
            return None
        if self.sslmode == "require" and not self.sslrootcert:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:
            # Only this bundle is trusted (not the system store), as libpq's sslrootcert.
            context = ssl.create_default_context(cafile=self.sslrootcert)
        except (OSError, ssl.SSLError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise ConfigError(f"cannot use the CA bundle {self.sslrootcert} (sslrootcert): {reason}") from None
        context.check_hostname = self.sslmode == "verify-full"
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def _int_setting(value: Any, name: str, low: int, high: int) -> int:
    """An integer setting in [low, high], or a ConfigError naming the setting (not its value)."""
    try:
        number = int(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number") from exc
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return number


def embedded_pgdata(env: Mapping[str, str], pgdata: Optional[Path] = None) -> Path:
    """Where the embedded server keeps its data (``PGDATA_DIR``, default ``.pgdata``)."""
    return Path(pgdata or env.get("PGDATA_DIR") or DEFAULT_PGDATA)


def read_dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """The ``KEY=value`` lines of a ``.env`` file ({} if there is none).

    A tiny parser on purpose: python-dotenv is not in the Glue runtime. An unreadable or
    non-UTF-8 file is a ConfigError (exit 2), never a traceback."""
    values: dict[str, str] = {}
    if not path.is_file():
        if path.exists():
            raise ConfigError(f"{path} is not a regular file")
        return values
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from exc
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def load_dotenv(path: Path = Path(".env"), environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Merge ``KEY=value`` lines of a ``.env`` file under the real environment (which wins)."""
    merged = read_dotenv(path)
    merged.update(os.environ if environ is None else environ)
    return merged


def _short(exc: BaseException) -> str:
    """First line of an exception, without any echo of connection parameters."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc.args[0] if exc.args else None, dict):  # pg8000 server error dict
        fields = exc.args[0]
        text = f"{fields.get('C', '')} {fields.get('M', '')}".strip()
    return redact(text)[:300]
