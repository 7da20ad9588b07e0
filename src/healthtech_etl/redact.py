"""Make text safe for logs and the console: :func:`redact` masks credentials in every message that
leaves the process; :func:`safe_text` escapes and cuts workbook values before they are logged."""

import json
import re
import unicodedata
from typing import Any
from urllib.parse import unquote

FREE_TEXT_LIMIT = 40

_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY_KEY = re.compile(r"[?&]([^&=\s]*)=")
_SECRET_KEY = re.compile(r"(?i)password|secret")
# key=value text (libpq's "password='a b' host=h", PGPASSWORD=...): a quoted value to its quote.
_PASSWORD_PARAM = re.compile(r"(?i)(?P<key>password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|[^&\s]+)")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def redact(text: str) -> str:
    """``text`` with URL credentials replaced by ``***`` and ``password=...`` values masked. A JSON
    log line stays JSON: its string values are masked one by one."""
    if text.startswith("{") and text.endswith("}"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return json.dumps(_redact_values(data), ensure_ascii=False)
    return "\n".join(_redact_line(line) for line in text.split("\n"))


def _redact_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _redact_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_values(item) for item in value]
    return redact(value) if isinstance(value, str) else value


def _redact_line(line: str) -> str:
    """From a line's first ``scheme://`` on, whatever the URL's shape (libpq's or an unencoded
    password holding "/", "@", "?", "&" or spaces): everything from ``://`` to the line's LAST ``@``
    is credentials, and so is all that follows a password (or secret) query key, percent-encoded
    or not, to the end of the line. Before it: ``password=...`` values."""
    start = _URL_START.search(line)
    head, url = (line[:start.start()], line[start.start():]) if start else (line, "")
    if url:
        secret = next((key for key in _QUERY_KEY.finditer(url) if _SECRET_KEY.search(unquote(key.group(1)))), None)
        if secret:
            url = url[:secret.end()] + "***"
        scheme_end, at = url.index("://") + 3, url.rfind("@")
        if at >= scheme_end:
            url = f"{url[:scheme_end]}***{url[at:]}"
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group('key')}***", head + url)


def _escape_char(char: str) -> str:
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def safe_text(value: Any, limit: int = FREE_TEXT_LIMIT) -> str:
    """A free-text value for a log line: control characters escaped, at most ``limit``
    characters (then ``...(N chars)``), so no cell can forge log lines or flood the log."""
    text = str(value)
    cut = len(text) > limit
    head = text[:limit] if cut else text
    escaped = "".join(
        _escape_char(char) if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char for char in head
    )
    if len(escaped) > limit:
        escaped = escaped[:limit]
        cut = True
    return f"{escaped}...({len(text)} chars)" if cut else escaped
