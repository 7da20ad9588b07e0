import pytest

from healthtech_etl.clean import MAX_HORIZON_DAYS, scrub, validate_window
from healthtech_etl.errors import ConfigError
from healthtech_etl.sheet_scan import NOT_A_VALUE, column_index, render_raw


@pytest.mark.parametrize("kind, value, date_styled, expected", [
    ("n", "104", False, "104"),
    ("n", "104.0", False, "104"),
    ("n", "104.5", False, "104.5"),
    ("n", "-5", False, "-5"),
    ("n", "1.5E-7", False, "1.5e-07"),
    ("n", "9007199254740991", False, "9007199254740991"),
    ("n", "9007199254740992", False, NOT_A_VALUE + "9007199254740992"),
    ("n", "9007199254740993", False, NOT_A_VALUE + "9007199254740993"),
    ("n", "1E+20", False, NOT_A_VALUE + "1E+20"),
    ("e", "#VALUE!", False, NOT_A_VALUE + "#VALUE!"),
    ("b", "1", False, NOT_A_VALUE + "true"),
    ("b", "0", False, NOT_A_VALUE + "false"),
    ("n", "45950.5", True, "2025-10-20 12:00:00"),
    ("n", "1", True, "1900-01-01 00:00:00"),
    ("n", "59.75", True, "1900-02-28 18:00:00"),
    ("n", "-18000", True, "1850-09-18 00:00:00"),  # before 1900: a date, out of range later
    ("n", "-18000.25", True, "1850-09-17 18:00:00"),
    ("n", "-693594", True, NOT_A_VALUE + "-693594"),
    ("n", "0.5", True, NOT_A_VALUE + "0.5"),
    ("n", "2958466", True, NOT_A_VALUE + "2958466"),
    ("n", "", False, None),
])
def test_render_raw(kind, value, date_styled, expected):
    assert render_raw(kind, value, date_styled) == expected


def test_column_index():
    assert [column_index(c) for c in ("A", "Z", "AA", "XFD")] == [0, 25, 26, 16383]


@pytest.mark.parametrize("horizon", [-1, MAX_HORIZON_DAYS + 1, 9223372036854775000, 1.5, True])
def test_window_that_could_overflow_is_a_config_error(horizon):
    from datetime import date

    with pytest.raises(ConfigError):
        validate_window(date(2025, 11, 1), horizon)
    validate_window(date(9999, 12, 31), MAX_HORIZON_DAYS)  # the widest window is fine


def test_scrub_without_and_with_pyarrow(monkeypatch):
    import pandas as pd

    from healthtech_etl import clean

    values = pd.Series(["a\x00b", "ok", None, NOT_A_VALUE + "#N/A", "x" * 32_768, "tab\tkept", "\x7f"], dtype=object)
    results = []
    for pyarrow in (clean._pa, None):
        monkeypatch.setattr(clean, "_pa", pyarrow)
        out = scrub(values)
        results.append((out["text"].tolist()[:3], out["not_value"].tolist(), out["too_long"].tolist(),
                        out["scrubbed"].tolist()))
    assert results[0] == results[1]
    assert results[0][0] == ["ab", "ok", None]
    assert results[0][1] == [False, False, False, True, False, False, False]
    assert results[0][2] == [False, False, False, False, True, False, False]
    assert results[0][3] == [True, False, False, False, False, False, True]
