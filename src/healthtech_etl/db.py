"""Connecting to PostgreSQL (pg8000, TCP or unix socket, optional TLS) and closing for sure;
re-exports the names of db_config.py other modules import from here."""

import logging
import re
import socket
import ssl
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Optional

from .db_config import DEFAULT_KEEP_RUNS, DbConfig, _short, embedded_pgdata, read_dotenv
from .embedded import idle_minutes_from
from .embedded import start_server as start_embedded
from .errors import DatabaseError

__all__ = [
    "DEFAULT_KEEP_RUNS", "DbConfig", "_short", "close_quietly", "connect", "embedded_pgdata", "read_dotenv",
    "resolve_config", "rollback_quietly", "start_embedded",
]

logger = logging.getLogger(__name__)

# The SSLRequest message: length 8, request code 80877103.
SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


def connect(config: DbConfig) -> Any:
    """Open a ``pg8000.native.Connection`` (autocommit until ``START TRANSACTION``).
    ``connect_timeout`` bounds connecting, never a statement. Raises a one-line DatabaseError."""
    import pg8000.native

    kwargs: dict[str, Any] = {"user": config.user, "password": config.password, "database": config.database,
                              "application_name": "healthtech-etl"}
    own_socket = None
    tls = _tls_context(config)  # first: an unusable CA bundle is a configuration error (exit 2)
    version = _version_tuple(getattr(pg8000, "__version__", "0"))
    try:
        if version >= (1, 30):  # pg8000 1.30 added ``sock``: a socket of ours, whose timeout we control
            own_socket = _open_socket(config, tls)
            # "No TLS request" is ssl_context None before pg8000 1.31, False since (None means "prefer").
            kwargs.update(sock=own_socket, ssl_context=False if version >= (1, 31) else None)
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
        # No NOTICEs ("relation already exists, skipping", one per DDL statement of every run).
        connection.run("SET statement_timeout = '30min'; SET client_min_messages = warning")
    except Exception as exc:
        close_quietly(connection)
        raise DatabaseError(f"PostgreSQL at {config.describe()} dropped the connection: {_short(exc)}") from exc
    return connection


def close_quietly(connection: Optional[Any]) -> None:
    """Close a connection; an error while closing (a dead socket) never hides the real one."""
    try:
        if connection is not None:
            connection.close()
    except Exception as exc:  # the server is gone: nothing left to release
        logger.debug("closing the connection failed: %s", type(exc).__name__)


def rollback_quietly(connection: Optional[Any]) -> None:
    """ROLLBACK after a failure; a broken connection is left alone (the server rolls back)."""
    try:
        if connection is not None:
            connection.run("ROLLBACK")
    except Exception as exc:
        logger.debug("rollback failed: %s", type(exc).__name__)


def _open_socket(config: DbConfig, tls: Optional[ssl.SSLContext]) -> socket.socket:
    """A socket to the server with ``connect_timeout`` on it; TLS negotiated as libpq does."""
    if config.unix_socket_dir:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.create_connection((config.host, config.port), config.connect_timeout)
    try:
        if config.unix_socket_dir:
            sock.settimeout(config.connect_timeout)
            sock.connect(str(Path(config.unix_socket_dir) / f".s.PGSQL.{config.port}"))
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock if tls is None else _negotiate_tls(sock, config, tls)
    except BaseException:
        sock.close()
        raise


def _tls_context(config: DbConfig) -> Optional[ssl.SSLContext]:
    """None over a unix socket (as libpq) or with ``disable``; ``prefer``: encrypted, unverified."""
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
    """pg8000 < 1.30 (Glue's 1.29) opens the socket and keeps its ``timeout`` for every read, so
    none is given: connecting is bounded by the OS's TCP timeout there. ``prefer`` is plain text."""
    if config.unix_socket_dir:
        return {"unix_sock": str(Path(config.unix_socket_dir) / f".s.PGSQL.{config.port}"), "timeout": None}
    tls = None if config.sslmode == "disable" else config.ssl_context()
    return {"host": config.host, "port": config.port, "timeout": None, "ssl_context": tls}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def resolve_config(env: Mapping[str, str], pgdata: Optional[Path] = None,
                   from_dotenv: Collection[str] = ()) -> DbConfig:
    """The database a local run uses: the environment's if any, else the embedded one (started or
    reused, and left running for the next command: it stops after EMBEDDED_IDLE_MINUTES unused)."""
    return DbConfig.from_env(env, from_dotenv) or start_embedded(embedded_pgdata(env, pgdata),
                                                                  idle_minutes_from(env))
