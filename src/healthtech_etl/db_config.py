"""Connection settings from the environment, ``.env``, a ``DATABASE_URL`` or a Secrets Manager
document, and the TLS they ask for. Credentials are never logged: :meth:`DbConfig.describe` is
the only text about a connection that reaches a log or an error."""

import os
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, urlencode

from .conninfo import PREFIXES, parse_uri
from .errors import ConfigError
from .redact import redact

SSL_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
# Runs whose rejected rows (and report snapshots) the database keeps: --keep-runs / KEEP_RUNS.
DEFAULT_KEEP_RUNS = 30


@dataclass(frozen=True)
class DbConfig:
    """Connection parameters. ``unix_socket_dir`` wins over ``host`` when set."""

    database: str = "postgres"
    user: str = "postgres"
    password: Optional[str] = field(default=None, repr=False)
    host: Optional[str] = "localhost"
    port: int = 5432
    unix_socket_dir: Optional[str] = None
    sslmode: str = "prefer"
    sslrootcert: Optional[str] = None
    connect_timeout: int = 10
    source: str = "settings"

    @classmethod
    def from_url(cls, url: str, source: str = "DATABASE_URL") -> "DbConfig":
        """A libpq URI read as libpq reads it (conninfo.py; ``host=/dir``: a unix socket). Shapes
        a run cannot use (several hosts, an abstract socket, a control character) are ConfigErrors;
        errors never quote the URL."""
        if not url.startswith(PREFIXES):
            scheme, sep, _ = url.partition("://")
            shown = repr(scheme) if sep and len(scheme) <= 20 and scheme.replace("+", "").isalnum() else "none"
            raise ConfigError(f"{source} must start with postgresql:// (got scheme {shown})")
        if any(ord(char) < 32 or ord(char) == 127 for char in url):
            raise ConfigError(f"{source} contains a control character (a line break or tab?): remove it")
        values = parse_uri(url, source)
        host, port = values.get("host") or "localhost", values.get("port") or "5432"
        if "," in host or "," in port:
            raise ConfigError(f"{source} names several hosts or ports; healthtech-etl connects to one: name one")
        if host.startswith("@"):
            raise ConfigError(f"{source} names an abstract unix socket (host=@...), which healthtech-etl "
                              "cannot use: give the socket's directory")
        socket_dir = host if host.startswith("/") else None
        return cls(
            database=values.get("dbname") or "postgres", user=values.get("user") or "postgres",
            password=values.get("password") or None, host=None if socket_dir else host,
            port=_int_setting(port, f"{source} is not a valid URL: the port", 1, 65535),
            unix_socket_dir=socket_dir, sslmode=values.get("sslmode", "prefer"), source=source,
            sslrootcert=values.get("sslrootcert") or None,
            connect_timeout=_int_setting(values.get("connect_timeout", 10), f"{source} connect_timeout", 1, 3600),
        ).validate()

    @classmethod
    def from_env(cls, env: Mapping[str, str], from_dotenv: Collection[str] = ()) -> Optional["DbConfig"]:
        """``DATABASE_URL``, else ``DB_HOST``, ``DB_PORT``... (None when neither is set).
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
        return cls(
            database=env.get("DB_NAME") or "postgres", user=env.get("DB_USER") or "postgres",
            password=env.get("DB_PASSWORD") or None, port=port, source=source,
            host=None if host.startswith("/") else host,
            unix_socket_dir=host if host.startswith("/") else None,
            sslmode=env.get("DB_SSLMODE") or "prefer", sslrootcert=env.get("DB_SSLROOTCERT") or None,
        ).validate()

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any], sslmode: str = "require",
                    sslrootcert: Optional[str] = None) -> "DbConfig":
        """From the JSON document RDS keeps in Secrets Manager (``username``, ``host``...)."""
        missing = [key for key in ("username", "password", "host") if not secret.get(key)]
        if missing:
            raise ConfigError(f"database secret lacks {', '.join(missing)}")
        engine = secret.get("engine", "postgres")
        if engine not in ("postgres", "postgresql", "aurora-postgresql"):
            raise ConfigError(f"database secret is for engine {engine!r}, not PostgreSQL")
        host = str(secret["host"])
        return cls(
            database=str(secret.get("dbname") or "postgres"), user=str(secret["username"]),
            password=str(secret["password"]), sslmode=sslmode, sslrootcert=sslrootcert,
            host=None if host.startswith("/") else host,
            unix_socket_dir=host if host.startswith("/") else None, source="Secrets Manager",
            port=_int_setting(secret.get("port") or 5432, "database secret port", 1, 65535),
        ).validate()

    def validate(self) -> "DbConfig":
        if self.sslmode not in SSL_MODES:
            raise ConfigError(f"sslmode must be one of {', '.join(SSL_MODES)} (got {self.sslmode!r})")
        if self.sslmode in ("verify-ca", "verify-full") and not self.sslrootcert:
            raise ConfigError(f"sslmode={self.sslmode} needs a CA bundle (sslrootcert)")
        return self

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
            netloc = f"{auth}@{_url_host(self.host)}:{self.port}"
        return f"postgresql://{netloc}/{quote(self.database, safe='')}?{urlencode(query, quote_via=quote)}"

    def with_database(self, database: str) -> "DbConfig":
        return replace(self, database=database)

    def describe(self) -> str:
        """Where we connect, without the password: safe for logs and error messages."""
        where = f"unix socket {self.unix_socket_dir}" if self.unix_socket_dir else \
            f"{_url_host(self.host)}:{self.port}"
        return f"{self.user}@{where}/{self.database} (from {self.source})"

    @property
    def from_dotenv(self) -> bool:
        return self.source.endswith(" in .env")

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        """The TLS a connection requires, as libpq's ``sslmode`` means it (``require`` with a CA
        bundle is ``verify-ca``); None for a unix socket, ``disable`` and ``prefer``."""
        if self.unix_socket_dir or self.sslmode in ("disable", "prefer"):
            return None
        if self.sslmode == "require" and not self.sslrootcert:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        try:  # only this bundle is trusted (not the system store), as libpq's sslrootcert
            context = ssl.create_default_context(cafile=self.sslrootcert)
        except (OSError, ssl.SSLError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
            raise ConfigError(f"cannot use the CA bundle {self.sslrootcert} (sslrootcert): {reason}") from None
        context.check_hostname = self.sslmode == "verify-full"
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def _url_host(host: Optional[str]) -> str:
    """A host as a URI writes it: an IPv6 address in brackets, the rest percent-encoded."""
    return f"[{quote(host, safe=':')}]" if host and ":" in host else quote(host or "", safe="")


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
    return Path(pgdata or env.get("PGDATA_DIR") or ".pgdata")


def read_dotenv(path: Path = Path(".env")) -> dict[str, str]:
    """The ``KEY=value`` lines of a ``.env`` file ({} if none); unreadable or not UTF-8: ConfigError."""
    if not path.is_file():
        if path.exists():
            raise ConfigError(f"{path} is not a regular file")
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from exc
    values: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
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
