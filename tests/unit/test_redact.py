import pytest

from healthtech_etl.redact import redact, safe_text


@pytest.mark.parametrize("text, secret", [
    ("postgresql://u:1234/secret@host/db", "1234/secret"),
    ("postgresql://etl:p@ss@word@db:5432/x?sslmode=require", "p@ss@word"),
    ("postgresql://etl:S3cr%40t@db/x", "S3cr%40t"),
    ("cannot parse postgres://a:b:c?d@/db?host=/tmp", "b:c?d"),
    ("postgresql://etl@db/x?password=hunter2&sslmode=require", "hunter2"),
    ("DATABASE_URL=postgresql://:only-password@host/db", "only-password"),
])
def test_credentials_are_masked_whatever_the_url_shape(text, secret):
    masked = redact(text)
    assert secret not in masked
    assert "***" in masked


def test_text_without_credentials_is_unchanged():
    text = "cannot connect to PostgreSQL at etl@127.0.0.1:9/clinic (from DATABASE_URL): refused"
    assert redact(text) == text


def test_safe_text_cuts_and_escapes():
    assert safe_text("pending") == "pending"
    assert safe_text("a\nb\tc\x1b[31m\u202e") == "a\\nb\\tc\\x1b[31m\\u202e"
    cut = safe_text("y" * 1_000_000)
    assert cut == "y" * 40 + "...(1000000 chars)"
    assert safe_text("\n" * 30).startswith("\\n" * 20) and len(safe_text("\n" * 30)) <= 40 + len("...(30 chars)")
