"""Make text safe for logs and the console: :func:`redact` masks credentials in every message that
leaves the process; :func:`safe_text` escapes and cuts workbook values before they are logged."""

import re
import unicodedata
from typing import Any

FREE_TEXT_LIMIT = 40

# Everything between "://" and the LAST "@" of the line is credentials, whatever the URL's shape:
# an unencoded password may itself hold "/", ":", "@" or "?" (postgresql://u:1234/secret@host/db).
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^\n]*@")
_PASSWORD_PARAM = re.compile(r"(?i)(?P<key>\bpassword\s*=\s*)(?P<value>[^&\s]+)")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def redact(text: str) -> str:
    """``text`` with URL credentials replaced by ``***`` and ``password=...`` values masked."""
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    return _PASSWORD_PARAM.sub(lambda m: f"{m.group('key')}***", text)


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
