"""Clinics (sources) and their exports: a source's name and an export folder's date. Plain Python,
importable without pandas (the AWS trigger uses it); Python 3.9."""

import re
from datetime import date
from typing import Optional

from .errors import ConfigError

DEFAULT_SOURCE = "default"
SOURCE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_FOLDER_DATE = re.compile(r"^(\d{4})-(\d{2})(?:-(\d{2}))?")


class StaleExport(ConfigError):
    """A merge of an export older than the newest its source has loaded (exit 2)."""


def validate_source(name: str) -> str:
    """``name`` if it is a valid source (clinic) name, else ConfigError (exit 2, one line)."""
    if not isinstance(name, str) or not SOURCE_PATTERN.match(name):
        shown = repr(name)[:80]
        raise ConfigError(f"invalid source {shown}: expected 1-63 characters a-z, 0-9, '_' or '-', "
                          "starting with a letter or digit")
    return name


def export_date_from_folder(name: str) -> Optional[date]:
    """The date an export folder's name starts with: ``YYYY-MM-DD...``, or ``YYYY-MM...`` (the first
    day of that month); None if it starts with neither (or with an impossible date)."""
    found = _FOLDER_DATE.match(name or "")
    if found is None:
        return None
    year, month, day = found.group(1), found.group(2), found.group(3) or "01"
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return None
