"""DbConfig.ssl_context: libpq's sslmode meanings (the handshakes themselves are in
tests/integration/test_tls.py against a TLS-only PostgreSQL)."""

import ssl

import pg8000
import pytest

from healthtech_etl.db import _version_tuple
from healthtech_etl.db_config import DbConfig
from healthtech_etl.errors import ConfigError

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def context(sslmode, sslrootcert=None, **kwargs):
    return DbConfig(host="db.example.com", sslmode=sslmode, sslrootcert=sslrootcert, **kwargs).ssl_context()


@pytest.mark.parametrize("sslmode, with_ca, verify_mode, check_hostname", [
    ("require", False, ssl.CERT_NONE, False),  # encrypted, not authenticated
    ("require", True, ssl.CERT_REQUIRED, False),  # libpq: a root CA file makes require verify-ca
    ("verify-ca", True, ssl.CERT_REQUIRED, False),  # the chain, not the name
    ("verify-full", True, ssl.CERT_REQUIRED, True),  # the chain and the name
])
def test_sslmodes_map_to_libpq_semantics(ca_file, sslmode, with_ca, verify_mode, check_hostname):
    made = context(sslmode, ca_file if with_ca else None)

    assert (made.verify_mode, made.check_hostname) == (verify_mode, check_hostname)
    if with_ca:  # only the given bundle is trusted, not the system store
        assert len(made.get_ca_certs()) == 1


@pytest.mark.parametrize("sslmode", ["disable", "prefer"])
def test_no_context_without_a_tls_requirement(sslmode):
    assert context(sslmode) is None


def test_unix_sockets_get_no_tls(ca_file):
    assert context("verify-full", ca_file, unix_socket_dir="/tmp") is None


def test_a_missing_bundle_is_a_one_line_configuration_error(tmp_path):
    missing = tmp_path / "nope.pem"

    with pytest.raises(ConfigError) as error:
        context("verify-full", str(missing))

    assert str(error.value) == f"cannot use the CA bundle {missing} (sslrootcert): No such file or directory"


SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")


def first_message(tmp_path, **settings):
    """What ``connect`` sends first to a listener that then hangs up (the connect fails)."""
    import socket
    import threading

    from healthtech_etl.db import connect
    from healthtech_etl.errors import DatabaseError

    if settings.get("unix_socket_dir"):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(tmp_path / ".s.PGSQL.5432"))
        settings["port"] = 5432
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        settings.update(host="127.0.0.1", port=listener.getsockname()[1])
    listener.listen(1)
    received = []

    def accept():
        peer, _ = listener.accept()
        received.append(peer.recv(8))
        peer.close()

    server = threading.Thread(target=accept)
    server.start()
    try:
        with pytest.raises(DatabaseError):
            connect(DbConfig(user="etl", password="x", database="clinic", connect_timeout=5, **settings))
    finally:
        server.join(5)
        listener.close()
    return received[0]


# With pg8000 1.30+ the socket is ours and TLS negotiated as libpq does; pg8000 1.29 (AWS Glue's)
# opens the socket itself and cannot "prefer" (None there means no TLS).
WE_NEGOTIATE = _version_tuple(pg8000.__version__) >= (1, 30)


@pytest.mark.parametrize("settings, asks_for_tls", [
    ({"sslmode": "disable"}, False),  # libpq: never ask
    ({"sslmode": "prefer"}, WE_NEGOTIATE),  # ask, go on in plain text if refused
    ({"sslmode": "require"}, True),
    ({"sslmode": "require", "unix_socket_dir": "."}, False),  # libpq: no TLS over a unix socket
])
def test_tls_is_asked_for_only_when_libpq_would(tmp_path, settings, asks_for_tls):
    if settings.get("unix_socket_dir"):
        settings["unix_socket_dir"] = str(tmp_path)

    assert (first_message(tmp_path, **settings) == SSL_REQUEST) is asks_for_tls


@pytest.mark.skipif(not WE_NEGOTIATE, reason="pg8000 < 1.30 opens the socket itself: the OS bounds the connect")
@pytest.mark.parametrize("sslmode", ["disable", "require"])
def test_connect_timeout_bounds_a_server_that_never_answers(sslmode):
    """A listener that accepts and then says nothing (neither to the TLS request nor to the
    start-up message): connect gives up after connect_timeout with one line."""
    import socket
    import time

    from healthtech_etl.db import connect
    from healthtech_etl.errors import DatabaseError

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL at etl@127.0.0.1:.*timed out"):
            connect(DbConfig(user="etl", host="127.0.0.1", port=listener.getsockname()[1], sslmode=sslmode,
                             connect_timeout=1))
        assert time.monotonic() - started < 5
    finally:
        listener.close()


def test_prefer_goes_on_in_plain_text_when_the_server_refuses_tls(tmp_path):
    """libpq's prefer: the server answers N to the TLS request, the start-up follows in plain text."""
    import socket
    import threading

    from healthtech_etl.db import connect
    from healthtech_etl.errors import DatabaseError

    if not WE_NEGOTIATE:
        pytest.skip("pg8000 < 1.30 cannot prefer")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = []

    def refuse_tls_then_read():
        peer, _ = listener.accept()
        received.append(peer.recv(8))
        peer.sendall(b"N")
        received.append(peer.recv(8))
        peer.close()

    server = threading.Thread(target=refuse_tls_then_read)
    server.start()
    try:
        with pytest.raises(DatabaseError):
            connect(DbConfig(user="etl", password="x", database="clinic", host="127.0.0.1",
                             port=listener.getsockname()[1], sslmode="prefer", connect_timeout=5))
    finally:
        server.join(5)
        listener.close()
    assert received[0] == SSL_REQUEST
    assert received[1][4:8] == (196608).to_bytes(4, "big")  # the start-up message: protocol 3.0, no TLS
