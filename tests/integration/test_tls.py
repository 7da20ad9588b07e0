"""Verified TLS against a real TLS-only PostgreSQL with a test CA (tests/tls_postgres.py).

The server's certificate names ``localhost`` only (no IP address), so connecting to
``127.0.0.1`` is a hostname mismatch for ``verify-full`` but fine for ``verify-ca``."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import tls_postgres
from helpers import AS_OF, cli_subprocess

from healthtech_etl.db import DbConfig, connect
from healthtech_etl.errors import ConfigError, DatabaseError

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tls_postgres.TlsPostgres]:
    bindir = tls_postgres.require_bindir()
    server = tls_postgres.start(tmp_path_factory.mktemp("tls-pg"), trustme.CA(), bindir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid CA certificate - just not the one that signed the server's certificate."""
    path = tmp_path_factory.mktemp("other-ca") / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def ssl_in_use(config: DbConfig) -> tuple:
    """(ssl, version) of our own connection, as the server sees it."""
    connection = connect(config)
    try:
        return tuple(connection.run("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0])
    finally:
        connection.close()


def run_etl(url: str, sample_inputs: tuple, tmp_path: Path) -> object:
    doctors, appointments = sample_inputs
    return cli_subprocess(["etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF],
                          cwd=tmp_path, env={"DATABASE_URL": url})


def test_cli_loads_over_verify_full_with_the_right_ca(tls_server, sample_inputs, tmp_path):
    database = tls_postgres.create_database(tls_server)
    url = tls_server.url(database)

    result = run_etl(url, sample_inputs, tmp_path)

    assert result.returncode == 0, result.stderr
    config = DbConfig.from_url(url)
    ssl, version = ssl_in_use(config)
    assert ssl is True and version.startswith("TLSv1.")
    connection = connect(config)
    try:
        assert connection.run("SELECT count(*) FROM healthtech.etl_runs WHERE status = 'succeeded'")[0][0] == 1
    finally:
        connection.close()


def test_cli_with_a_wrong_ca_fails_with_exit_4_in_one_line(tls_server, wrong_ca, sample_inputs, tmp_path):
    database = tls_postgres.create_database(tls_server)

    result = run_etl(tls_server.url(database, ca_file=wrong_ca), sample_inputs, tmp_path)

    assert result.returncode == 4
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"healthtech-etl: error: cannot connect to PostgreSQL at postgres@localhost:{tls_server.port}/")
    assert "certificate verify failed" in last and "unable to get local issuer certificate" in last
    assert "Traceback" not in result.stderr


def test_cli_with_a_hostname_the_certificate_does_not_name_fails_with_exit_4(tls_server, sample_inputs, tmp_path):
    database = tls_postgres.create_database(tls_server)

    result = run_etl(tls_server.url(database, host="127.0.0.1"), sample_inputs, tmp_path)

    assert result.returncode == 4
    last = result.stderr.strip().splitlines()[-1]
    assert "certificate verify failed" in last and "mismatch" in last and "'127.0.0.1'" in last


def test_verify_ca_checks_the_chain_but_not_the_name(tls_server, wrong_ca):
    by_ip = DbConfig.from_url(tls_server.url(host="127.0.0.1", sslmode="verify-ca"))
    assert ssl_in_use(by_ip)[0] is True

    with pytest.raises(DatabaseError, match="certificate verify failed"):
        connect(DbConfig.from_url(tls_server.url(host="127.0.0.1", sslmode="verify-ca", ca_file=wrong_ca)))


def test_require_encrypts_and_with_a_ca_bundle_verifies_like_libpq(tls_server, wrong_ca):
    unverified = DbConfig.from_url(f"postgresql://postgres@127.0.0.1:{tls_server.port}/postgres?sslmode=require")
    assert ssl_in_use(unverified)[0] is True
    assert ssl_in_use(DbConfig.from_url(tls_server.url(host="127.0.0.1", sslmode="require")))[0] is True

    with pytest.raises(DatabaseError, match="certificate verify failed"):
        connect(DbConfig.from_url(tls_server.url(host="127.0.0.1", sslmode="require", ca_file=wrong_ca)))


@pytest.mark.parametrize("content", [None, b"", b"not a certificate\n"])
def test_an_unusable_ca_bundle_is_a_configuration_error(tls_server, tmp_path, content):
    bundle = tmp_path / "bundle.pem"
    if content is not None:
        bundle.write_bytes(content)
    config = DbConfig.from_url(tls_server.url(ca_file=bundle))

    with pytest.raises(ConfigError, match=rf"^cannot use the CA bundle {bundle} \(sslrootcert\): ") as error:
        connect(config)
    assert "\n" not in str(error.value)
