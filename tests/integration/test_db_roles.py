"""The deployed system's database roles (db_roles.py) on the real PostgreSQL: the ETL role loads
and owns the schema but cannot create roles or databases; the reader role answers `runs`,
`rejections` and `report` and cannot write; the setup upgrades a database whose tables an
administrator created, and running it again changes nothing.

Roles are cluster-wide: every test uses role names of its own (one with a quote and a space, to
prove the quoting) and drops them afterwards."""

import uuid
from contextlib import closing
from dataclasses import replace
from typing import Any

import pytest
import scramp
from helpers import APPOINTMENT_ROWS, APPOINTMENTS_HEADER, AS_OF, fetch

from healthtech_etl.db import DbConfig, connect
from healthtech_etl.db_roles import Login, scram_verifier, setup_roles
from healthtech_etl.errors import ConfigError


@pytest.fixture
def roles(db_config: DbConfig) -> Any:
    """Two fresh role names (not created yet) and configs that log in as them."""
    tag = uuid.uuid4().hex[:8]
    etl = Login(f"t_etl_{tag}", f"etl-{tag}-pw'quote")
    reader = Login(f'T reader "{tag}"', f"reader {tag} pw")
    yield type("Roles", (), {
        "etl": etl, "reader": reader,
        "etl_config": replace(db_config, user=etl.name, password=etl.password),
        "reader_config": replace(db_config, user=reader.name, password=reader.password),
    })
    with closing(connect(db_config)) as admin:
        for login in (etl, reader):
            name = '"' + login.name.replace('"', '""') + '"'
            if admin.run("SELECT 1 FROM pg_roles WHERE rolname = :n", n=login.name):
                admin.run(f"DROP OWNED BY {name} CASCADE")
                admin.run(f"DROP ROLE {name}")


def setup(db_config: DbConfig, roles: Any) -> list:
    with closing(connect(db_config)) as admin:
        return setup_roles(admin, roles.etl, roles.reader)


def etl(run_cli, sample_inputs, config: DbConfig, *extra: str, appointments: Any = None) -> int:
    doctors, appointments = sample_inputs[0], appointments or sample_inputs[1]
    return run_cli("etl", "--doctors", str(doctors), "--appointments", str(appointments), "--as-of", AS_OF,
                   *extra, env={"DATABASE_URL": config.url()})


def denied(config: DbConfig, statement: str) -> str:
    """The SQLSTATE of ``statement`` run as ``config``'s user (it must fail)."""
    with closing(connect(config)) as connection:
        with pytest.raises(Exception) as failure:
            connection.run(statement)
    return failure.value.args[0]["C"]


def privileges(db_config: DbConfig) -> list:
    """Owners, ACLs and default ACLs of the schema and its tables: what the setup decides."""
    return fetch(db_config, """
        SELECT 'rel', c.relname, pg_get_userbyid(c.relowner), coalesce(c.relacl::text, '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'healthtech'
        UNION ALL SELECT 'schema', nspname, pg_get_userbyid(nspowner), coalesce(nspacl::text, '')
        FROM pg_namespace WHERE nspname = 'healthtech'
        UNION ALL SELECT 'default', defaclobjtype::text, pg_get_userbyid(defaclrole), defaclacl::text FROM pg_default_acl
        UNION ALL SELECT 'db', datname, '', coalesce(datacl::text, '') FROM pg_database WHERE datname = current_database()
        ORDER BY 1, 2""")


def test_fresh_database_etl_role_loads_and_reader_reads(run_cli, sample_inputs, db_config, roles, tmp_path, capsys):
    done = setup(db_config, roles)
    assert any(line.startswith("CREATE SCHEMA") for line in done)
    assert all("SCRAM-SHA-256$" not in line and roles.etl.password not in line for line in done)

    assert etl(run_cli, sample_inputs, roles.etl_config) == 0
    owners = {row[0] for row in fetch(db_config, "SELECT tableowner FROM pg_tables WHERE schemaname = 'healthtech'")}
    assert owners == {roles.etl.name}
    loaded = fetch(db_config, "SELECT count(*) FROM healthtech.appointments")[0][0]
    assert loaded > 0
    capsys.readouterr()

    # The reader: the run list, the rejected rows and the rebuilt report.
    reader_env = {"DATABASE_URL": roles.reader_config.url()}
    assert run_cli("runs", env=reader_env) == 0
    assert "succeeded" in capsys.readouterr().out
    assert run_cli("rejections", env=reader_env) == 0
    assert "rejected row" in capsys.readouterr().out
    assert run_cli("report", "--report-dir", str(tmp_path / "ops"), env=reader_env) == 0
    assert list((tmp_path / "ops").glob("*/quality_report.html"))

    # ... and nothing else: writes fail (read-only sessions, and no privilege even when read-write).
    for statement in ("DELETE FROM healthtech.appointments",
                      "SET default_transaction_read_only = off; DELETE FROM healthtech.appointments",
                      "SET default_transaction_read_only = off; CREATE TABLE healthtech.x (a int)"):
        assert denied(roles.reader_config, statement) in ("25006", "42501")  # read-only / insufficient privilege
    assert fetch(db_config, "SELECT count(*) FROM healthtech.appointments")[0][0] == loaded

    # The ETL role cannot make roles or databases.
    assert denied(roles.etl_config, "CREATE ROLE t_intruder") == "42501"
    assert denied(roles.etl_config, "CREATE DATABASE t_intruder") == "42501"
    assert denied(roles.etl_config, f"ALTER ROLE {roles.etl.name} CREATEROLE") == "42501"


def test_existing_tables_move_to_the_etl_role_and_setup_is_idempotent(run_cli, sample_inputs, make_xlsx, db_config,
                                                                      roles, capsys):
    # A re-run of the same bytes is a no-op: each load below gets a workbook of its own.
    later = [make_xlsx(f"appointments{n}.xlsx", APPOINTMENTS_HEADER, APPOINTMENT_ROWS[:n]) for n in (7, 6, 5)]
    # Before roles existed, the administrator ran the ETL: it owns the schema and its tables.
    assert etl(run_cli, sample_inputs, db_config) == 0
    done = setup(db_config, roles)
    assert any(line.startswith("ALTER TABLE healthtech.appointments OWNER TO") for line in done)
    first = privileges(db_config)

    # The ETL role can now replace and merge into those tables; the reader sees every run.
    assert etl(run_cli, sample_inputs, roles.etl_config, appointments=later[0]) == 0
    assert etl(run_cli, sample_inputs, roles.etl_config, "--mode", "merge", appointments=later[1]) == 0
    capsys.readouterr()
    assert run_cli("runs", "--json", env={"DATABASE_URL": roles.reader_config.url()}) == 0
    assert capsys.readouterr().out.count('"run_id"') == 3

    # Again: same owners, grants and default privileges, and both roles still work.
    between = privileges(db_config)
    assert {row[2] for row in between if row[0] in ("rel", "schema")} == {roles.etl.name}
    assert first == [row for row in between if (row[0], row[1]) in {(r[0], r[1]) for r in first}]
    again = setup(db_config, roles)
    assert [line for line in again if line.startswith(("ALTER TABLE", "CREATE"))] == []
    assert privileges(db_config) == between
    assert etl(run_cli, sample_inputs, roles.etl_config, appointments=later[2]) == 0
    with closing(connect(roles.reader_config)) as reader:
        assert reader.run("SELECT count(*) FROM healthtech.etl_runs")[0][0] == 4


def test_a_table_the_etl_creates_later_is_readable(db_config, roles):
    setup(db_config, roles)
    with closing(connect(roles.etl_config)) as connection:
        connection.run("CREATE TABLE healthtech.added_later (a int); INSERT INTO healthtech.added_later VALUES (1)")
    with closing(connect(roles.reader_config)) as reader:
        assert reader.run("SELECT a FROM healthtech.added_later") == [[1]]


def test_forbidden_attribute_fails_setup_and_changes_nothing(db_config, roles):
    setup(db_config, roles)
    with closing(connect(db_config)) as admin:
        admin.run(f"ALTER ROLE {roles.etl.name} CREATEDB")
    setup(db_config, roles)  # what the setup grants it takes back ...
    assert fetch(db_config, "SELECT rolcreatedb FROM pg_roles WHERE rolname = :n", n=roles.etl.name) == [[False]]
    with closing(connect(db_config)) as admin:
        admin.run(f"ALTER ROLE {roles.etl.name} SUPERUSER")  # ... what only a superuser can take back, it refuses
    before = privileges(db_config)
    with pytest.raises(ConfigError, match=f"role {roles.etl.name} has SUPERUSER: .* NOSUPERUSER"):
        setup(db_config, roles)
    assert privileges(db_config) == before


def test_password_is_sent_as_the_scram_verifier_postgresql_would_store(db_config, roles):
    salt = bytes(range(16))
    verifier = scram_verifier("s3cret pw", salt=salt)
    _, stored_key, server_key, iterations = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        "s3cret pw", iteration_count=4096, salt=salt)
    import base64

    assert verifier == (f"SCRAM-SHA-256${iterations}:{base64.b64encode(salt).decode()}$"
                        f"{base64.b64encode(stored_key).decode()}:{base64.b64encode(server_key).decode()}")
    setup(db_config, roles)
    stored = fetch(db_config, "SELECT rolpassword FROM pg_authid WHERE rolname = :n", n=roles.reader.name)[0][0]
    assert stored.startswith("SCRAM-SHA-256$4096:") and roles.reader.password not in stored
    with pytest.raises(ConfigError, match="printable ASCII"):
        scram_verifier("pässword")
