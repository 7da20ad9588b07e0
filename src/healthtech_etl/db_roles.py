"""The login roles of a deployed database, set up by one idempotent transaction run as an administrator.

``healthtech_etl`` logs in, owns schema ``healthtech`` and everything in it (it creates and upgrades
its tables), may create schemas and temporary tables here, and nothing else (no SUPERUSER,
CREATEROLE, CREATEDB, REPLICATION, BYPASSRLS). ``healthtech_reader`` has USAGE on the schema and
SELECT on its tables, now and (default privileges of the ETL role) on any the ETL creates later;
its sessions are read-only by default. Running it again sets passwords, ownership and grants to
this state again. Passwords travel as SCRAM-SHA-256 verifiers, never clear text; identifiers are
quoted; nothing depends on the list of tables."""

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .db_config import _short
from .errors import ConfigError, DatabaseError
from .schema import SCHEMA

ETL_ROLE = "healthtech_etl"
READER_ROLE = "healthtech_reader"
SCRAM_ITERATIONS = 4096
# Attributes neither role may have (only a superuser can take some back: the setup then fails).
FORBIDDEN_ATTRIBUTES = ("SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS")
_ATTRIBUTES = "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = :n"
# Relation kinds moved to the ETL role (a column's sequence moves with its table).
_RELATION_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE",
                   "S": "SEQUENCE"}
_FOREIGN_OBJECTS = """
SELECT c.relkind::text, quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :owner)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype IN ('a', 'i') AND c.relkind = 'S')
ORDER BY c.relname"""
_FOREIGN_ROUTINES = """
SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = :schema AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = :owner) ORDER BY 1"""


@dataclass(frozen=True)
class Login:
    """A role to set up and the password it logs in with (never shown)."""

    name: str
    password: str = field(repr=False)


def quote_ident(name: str) -> str:
    """``name`` as a PostgreSQL identifier, always quoted (a role name comes from a secret)."""
    if not name or "\x00" in name or len(name.encode("utf-8")) > 63:
        raise ConfigError(f"{name!r} cannot be a PostgreSQL role or schema name (empty, NUL or over 63 bytes)")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    if "\x00" in text:
        raise ConfigError("a string for PostgreSQL contains NUL")
    return "'" + text.replace("'", "''") + "'"


def scram_verifier(password: str, salt: bytes = b"", iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as in
    ``pg_authid.rolpassword``). Printable ASCII only: SASLprep is then the identity."""
    if not password or not all(" " <= char <= "~" for char in password):
        raise ConfigError("a database password must be non-empty printable ASCII (as the stack generates them)")
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class _Session:
    """Runs the setup's statements on one connection and keeps what it ran, verifiers left out."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.done: list[str] = []

    def query(self, text: str, **params: Any) -> list[Any]:
        return self.connection.run(text, **params)

    def execute(self, statement: str) -> None:
        self.connection.run(statement)
        head, marker, _ = statement.partition(" PASSWORD ")
        self.done.append(head + (" PASSWORD <scram-sha-256 verifier>" if marker else ""))


def _apply(session: _Session, etl: Login, reader: Login) -> None:
    """Bring this database to the state in the module docstring."""
    if etl.name == reader.name:
        raise ConfigError(f"the ETL and reader roles must differ (both {etl.name!r})")
    database = session.query("SELECT current_database()")[0][0]
    for login in (etl, reader):
        verb = "ALTER" if session.query("SELECT 1 FROM pg_roles WHERE rolname = :name", name=login.name) \
            else "CREATE"
        session.execute(f"{verb} ROLE {quote_ident(login.name)} WITH LOGIN NOCREATEDB NOCREATEROLE "
                        f"PASSWORD {quote_literal(scram_verifier(login.password))}")
    etl_id, reader_id, schema_id, db_id = (quote_ident(n) for n in (etl.name, reader.name, SCHEMA, database))
    session.execute(f"ALTER ROLE {reader_id} SET default_transaction_read_only = on")
    # An administrator that is not a superuser (RDS) may only hand objects to a role it is a member of.
    if not session.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0][0]:
        session.execute(f"GRANT {etl_id} TO CURRENT_USER")
    session.execute(f"GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {db_id} TO {etl_id}")
    session.execute(f"GRANT CONNECT ON DATABASE {db_id} TO {reader_id}")
    if session.query("SELECT 1 FROM pg_namespace WHERE nspname = :schema", schema=SCHEMA):
        session.execute(f"ALTER SCHEMA {schema_id} OWNER TO {etl_id}")
        # Objects created before the role existed (or by an administrator by hand) move to it.
        for kind, name in session.query(_FOREIGN_OBJECTS, schema=SCHEMA, owner=etl.name):
            session.execute(f"ALTER {_RELATION_KINDS[kind]} {name} OWNER TO {etl_id}")
        for (routine,) in session.query(_FOREIGN_ROUTINES, schema=SCHEMA, owner=etl.name):
            session.execute(f"ALTER ROUTINE {routine} OWNER TO {etl_id}")
    else:
        session.execute(f"CREATE SCHEMA {schema_id} AUTHORIZATION {etl_id}")
    for statement in (
        f"REVOKE ALL ON SCHEMA {schema_id} FROM {reader_id}",
        f"GRANT USAGE ON SCHEMA {schema_id} TO {reader_id}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema_id} FROM {reader_id}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema_id} TO {reader_id}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {etl_id} IN SCHEMA {schema_id} GRANT SELECT ON TABLES TO {reader_id}",
    ):
        session.execute(statement)


def setup_roles(connection: Any, etl: Login, reader: Login, lock_timeout_seconds: int = 60) -> list[str]:
    """Create or update both roles and their privileges in one transaction; return what was done,
    one line per statement with the password verifiers left out (safe to log)."""
    session = _Session(connection)
    try:
        connection.run("START TRANSACTION")
        connection.run(f"SET LOCAL lock_timeout = '{int(lock_timeout_seconds)}s'")
        _apply(session, etl, reader)
        _check_attributes(connection, (etl.name, reader.name))
        connection.run("COMMIT")
    except ConfigError:
        _rollback(connection)
        raise
    except Exception as exc:
        _rollback(connection)
        raise DatabaseError(f"database role setup failed, nothing changed: {_short(exc)}") from None
    return session.done


def _check_attributes(connection: Any, names: Sequence[str]) -> None:
    for name in names:
        granted = [keyword for keyword, value in zip(FORBIDDEN_ATTRIBUTES, connection.run(_ATTRIBUTES, n=name)[0])
                   if value]
        if granted:
            raise ConfigError(f"role {name} has {', '.join(granted)}: an administrator must remove it "
                              f"(ALTER ROLE {quote_ident(name)} NO{granted[0]}), then run the setup again")


def _rollback(connection: Any) -> None:
    try:
        connection.run("ROLLBACK")
    except Exception:  # the connection is gone: nothing was committed
        pass
