import ssl

import pytest

from healthtech_etl.db_config import DbConfig, load_dotenv
from healthtech_etl.errors import ConfigError


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
