"""Connecting to PostgreSQL (pg8000, TCP or unix socket, optional TLS) and closing for sure.

The settings (where, who, which TLS) are :class:`~healthtech_etl.db_config.DbConfig`'s; the
embedded server a local run starts is :mod:`healthtech_etl.embedded`'s. Both are re-exported
here, with :func:`start_embedded` and :func:`resolve_config`, the database a local run uses.
"""

import logging
import re
import socket
import ssl
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Optional

from .db_config import (
    DEFAULT_KEEP_RUNS,
    DEFAULT_PGDATA,
    SSL_MODES,
    DbConfig,
    _short,
    embedded_pgdata,
    load_dotenv,
    read_dotenv,
)
from .embedded import start_server
from .errors import DatabaseError

__all__ = [
    "DEFAULT_KEEP_RUNS", "DEFAULT_PGDATA", "SSL_MODES", "DbConfig", "_short", "close_quietly", "connect",
    "embedded_pgdata", "load_dotenv", "read_dotenv", "resolve_config", "rollback_quietly",
    "start_embedded",
]

logger = logging.getLogger(__name__)

# The SSLRequest message: length 8, request code 80877103.
SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


def connect(config: DbConfig) -> Any:
    """Open a ``pg8000.native.Connection`` (autocommit until ``START TRANSACTION``).

    ``connect_timeout`` bounds connecting (TCP, TLS, start-up and authentication), never a
    statement: a load that waits for the lock, or rebuilds indexes, longer than it must not
    fail; statements are bounded by ``statement_timeout`` instead. Raises
    :class:`DatabaseError` with one clear line naming what was tried."""
    import pg8000.native

    kwargs: dict[str, Any] = {
        "user": config.user,
        "password": config.password,
        "database": config.database,
        "application_name": "healthtech-etl",
    }
    own_socket = None
    tls = _tls_context(config)  # first: an unusable CA bundle is a configuration error (exit 2)
    try:
        if _takes_a_socket():
            own_socket = _open_socket(config, tls)
            kwargs.update(sock=own_socket, ssl_context=_no_tls_argument())
        else:
            kwargs.update(_legacy_arguments(config))
        connection = pg8000.native.Connection(**kwargs)
    except Exception as exc:  # pg8000 raises several types (InterfaceError, OSError, ...)
        if own_socket is not None:
            own_socket.close()
        hint = " - these settings came from .env: fix it, or remove it to use the embedded PostgreSQL" \
            if config.from_dotenv else ""
        raise DatabaseError(f"cannot connect to PostgreSQL at {config.describe()}: {_short(exc)}{hint}") from exc
    if own_socket is not None:
        own_socket.settimeout(None)
    try:
        # One statement must not hang a run forever; the load itself is bounded by its size.
        # No NOTICEs ("relation already exists, skipping", one per DDL statement of every
        # run): each is a message to read.
        connection.run("SET statement_timeout = '30min'; SET client_min_messages = warning")
    except Exception as exc:
        close_quietly(connection)
        raise DatabaseError(f"PostgreSQL at {config.describe()} dropped the connection: {_short(exc)}") from exc
    return connection


def close_quietly(connection: Optional[Any]) -> None:
    """Close a connection; an error while closing (a dead socket) never hides the real one.

    (After an interrupt in the middle of a statement, the exception's traceback may still hold
    pg8000's socket file: the server keeps that session until the process ends. A load's
    session is ended by :func:`healthtech_etl.load.record_failed_run`.)"""
    if connection is None:
        return
    try:
        connection.close()
    except Exception as exc:  # the server is gone: nothing left to release
        logger.debug("closing the connection failed: %s", type(exc).__name__)


def rollback_quietly(connection: Optional[Any]) -> None:
    """ROLLBACK after a failure; a broken connection is left alone (the server rolls back when
    the session ends), so the original error is the one raised."""
    try:
        if connection is not None:
            connection.run("ROLLBACK")
    except Exception as exc:
        logger.debug("rollback failed: %s", type(exc).__name__)


def _open_socket(config: DbConfig, tls: Optional[ssl.SSLContext]) -> socket.socket:
    """A socket to the server, with ``connect_timeout`` on it until the connection is made; TLS
    (``tls``: see :func:`_tls_context`) negotiated as libpq does."""
    if config.unix_socket_dir:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(config.connect_timeout)
            sock.connect(str(Path(config.unix_socket_dir) / f".s.PGSQL.{config.port}"))
        except BaseException:
            sock.close()
            raise
        return sock
    sock = socket.create_connection((config.host, config.port), config.connect_timeout)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock if tls is None else _negotiate_tls(sock, config, tls)
    except BaseException:
        sock.close()
        raise


def _tls_context(config: DbConfig) -> Optional[ssl.SSLContext]:
    """The TLS a connection asks for: none over a unix socket (as libpq) or with ``disable``;
    for ``prefer``, encryption without authentication (libpq's prefer); else ``sslmode``'s."""
    if config.unix_socket_dir or config.sslmode == "disable":
        return None
    context = config.ssl_context()
    if context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # nothing to verify: no CA store to load
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _negotiate_tls(sock: socket.socket, config: DbConfig, tls: ssl.SSLContext) -> socket.socket:
    """Ask for TLS; ``prefer`` goes on in plain text if the server refuses."""
    sock.sendall(SSL_REQUEST)
    answer = sock.recv(1)
    if answer == b"S":
        return tls.wrap_socket(sock, server_hostname=config.host)
    if answer == b"N" and config.sslmode == "prefer":
        return sock
    raise ConnectionError("the server refuses TLS" if answer == b"N" else "no answer to the TLS request")


def _legacy_arguments(config: DbConfig) -> dict[str, Any]:
    """pg8000 < 1.30 (AWS Glue's 1.29) opens the socket itself and keeps its ``timeout`` for every
    later read, so none is given there; an unreachable server is found by a TCP probe bounded by
    ``connect_timeout``. TLS: none over a unix socket or with ``disable``; ``prefer`` is plain text (pg8000 1.29
    reads None as "no TLS" and anything else as "TLS required")."""
    if config.unix_socket_dir:
        return {"unix_sock": str(Path(config.unix_socket_dir) / f".s.PGSQL.{config.port}"), "timeout": None}
    # An unreachable server still fails within connect_timeout: a TCP probe of our own first.
    socket.create_connection((config.host, config.port), config.connect_timeout).close()
    tls = None if config.sslmode == "disable" else config.ssl_context()
    return {"host": config.host, "port": config.port, "timeout": None, "ssl_context": tls}


def _pg8000_version() -> tuple[int, ...]:
    import pg8000

    return _version_tuple(getattr(pg8000, "__version__", "0"))


def _takes_a_socket() -> bool:
    """pg8000 1.30 added ``sock``: a socket of ours, whose timeout we control."""
    return _pg8000_version() >= (1, 30)


def _no_tls_argument() -> Optional[bool]:
    """pg8000's ``ssl_context`` for "no TLS request": None before 1.31, False since (1.31 made
    None mean "prefer")."""
    return False if _pg8000_version() >= (1, 31) else None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def start_embedded(pgdata: Path) -> DbConfig:
    """Start (or reuse) the embedded PostgreSQL kept in ``pgdata`` and return its config
    (see :mod:`healthtech_etl.embedded`). It stops when the last process using it exits."""
    return start_server(Path(pgdata))


def resolve_config(env: Mapping[str, str], pgdata: Optional[Path] = None,
                   from_dotenv: Collection[str] = ()) -> DbConfig:
    """The database a local run uses: the environment's if any, else the embedded one."""
    config = DbConfig.from_env(env, from_dotenv)
    if config is not None:
        return config
    return start_embedded(embedded_pgdata(env, pgdata))
