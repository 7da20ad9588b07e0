"""The quality contract file: the shipped quality.toml is the built-in defaults, a partial file keeps
the rest, and every mistake is one ConfigError line naming the key and the line it is on."""

import builtins
import hashlib
import sys
from datetime import date
from pathlib import Path

import pytest
from test_quality import result

from healthtech_etl import contract
from healthtech_etl.contract import DEFAULT_METRICS, Contract, load
from healthtech_etl.errors import ConfigError
from healthtech_etl.quality import compute_metrics

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "quality.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_quality_toml_is_the_built_in_defaults():
    shipped = load(ROOT / "quality.toml")
    assert shipped.metrics == DEFAULT_METRICS and shipped.checks == ()
    assert shipped.sha256 == hashlib.sha256((ROOT / "quality.toml").read_bytes()).hexdigest()
    assert load(None) == Contract() and load(None).describe()["source"] == "built-in defaults"


def test_the_defaults_are_proportionate():
    # 3 missing ids in 1,000 rows: a warning; a third of the rows rejected: critical.
    few = compute_metrics(result(read=1000, ids_complete=997, doctor_id_valid=1000, doctor_known=1000,
                                 dates_non_empty=1000, dates_parsed=1000, loaded=997))
    assert few["id_completeness"]["status"] == "warning" and few["acceptance_rate"]["status"] == "ok"
    third = compute_metrics(result(read=999, ids_complete=999, doctor_id_valid=999, doctor_known=999,
                                   dates_non_empty=999, dates_parsed=999, loaded=666))
    assert third["acceptance_rate"]["status"] == "critical"


def test_a_partial_contract_keeps_the_other_defaults_and_off_switches_a_level_off(tmp_path):
    terms = load(write(tmp_path, '[metrics.acceptance_rate]\ncritical = "off"\n\n[metrics.duplicate_rate]\n'
                                 "warning = 1\n"))
    levels = {m.key: (m.warning, m.critical) for m in terms.metrics}
    defaults = {m.key: (m.warning, m.critical) for m in DEFAULT_METRICS}
    assert levels["acceptance_rate"] == (defaults["acceptance_rate"][0], None)
    assert levels["duplicate_rate"] == (1.0, defaults["duplicate_rate"][1])
    assert {k: v for k, v in levels.items() if k not in ("acceptance_rate", "duplicate_rate")} == {
        k: v for k, v in defaults.items() if k not in ("acceptance_rate", "duplicate_rate")}
    metric = compute_metrics(result(loaded=0), terms)["acceptance_rate"]
    assert (metric["status"], metric["critical_threshold"]) == ("warning", None)  # no critical level left
    assert terms.describe()["metrics"]["acceptance_rate"] == {"warning": 90.0, "critical": None, "alert_when": "below"}


def test_checks_are_read_and_recorded_as_declared(tmp_path):
    terms = load(write(tmp_path, '[[checks]]\nentity = "appointments"\ncolumn = "booking_date"\n'
                                 'range = [2020-01-01, "2027-12-31"]\nlevel = "critical"\n\n'
                                 '[[checks]]\nentity = "doctors"\ncolumn = "specialty"\nrequired_share = 80\n'))
    assert [(c.entity, c.column, c.kind, c.level) for c in terms.checks] == [
        ("appointments", "booking_date", "range", "critical"), ("doctors", "specialty", "required_share", "warning")]
    assert (terms.checks[0].low, terms.checks[0].high) == (date(2020, 1, 1), date(2027, 12, 31))
    assert terms.describe()["checks"] == [
        {"entity": "appointments", "column": "booking_date", "range": ["2020-01-01", "2027-12-31"], "level": "critical"},
        {"entity": "doctors", "column": "specialty", "required_share": 80.0, "level": "warning"}]
    assert [c.expected() for c in terms.checks] == ["2020-01-01 .. 2027-12-31", ">= 80 %"]


@pytest.mark.parametrize("text, message", [
    ("metrics = 5\n", "line 1: metrics: must be a table"),
    ("[metrics]\nid_completeness = 5\n", "line 2: metrics.id_completeness: must be a table"),
    ("# comment\n\n[metrics.id_completness]\nwarning = 99\n", "line 3: metrics.id_completness: unknown key"),
    ("[metrics.typing_success]\nwarning = 99\ncritical = 99.5\n",
     "line 3: metrics.typing_success.critical: 99.5 is above the warning level 99"),
    ("[metrics.duplicate_rate]\nwarning = 10\ncritical = 2\n",
     "line 3: metrics.duplicate_rate.critical: 2 is below the warning level 10"),
    ("[metrics.duplicate_rate]\nwarning = true\n", "line 2: metrics.duplicate_rate.warning: must be a percentage"),
    ("[metrics.duplicate_rate]\nwarning = 101\n", "line 2: metrics.duplicate_rate.warning: must be a percentage"),
    ("[metrics]\nid_completeness = {warning = 90, critical = 120}\n",
     "line 2: metrics.id_completeness.critical: must be a percentage"),
    ("thresholds = 1\n", "line 1: thresholds: unknown key (expected metrics, checks)"),
    ('[[checks]]\nentity = "patients"\n', "line 2: checks[0].entity: must be one of doctors, appointments"),
    ('[[checks]]\nentity = "doctors"\ncolumn = "doctor_id"\nrange = [1, 9]\nrequired_share = 9\n',
     "line 1: checks[0]: needs exactly one of range and required_share"),
    ('[[checks]]\nentity = "doctors"\ncolumn = "name"\nrange = [1, 9]\n',
     "line 4: checks[0].range: applies to ids and booking_date, not name"),
    ('[[checks]]\nentity = "doctors"\ncolumn = "doctor_id"\nrange = [9, 1]\n', "line 4: checks[0].range: low 9 is above"),
    ('[[checks]]\nentity = "doctors"\ncolumn = "doctor_id"\nrange = [1.5, 9]\n', "line 4: checks[0].range: bounds must be"),
    ('[[checks]]\nentity = "appointments"\ncolumn = "booking_date"\nrange = [2020-01-01T10:00:00, 2021-01-01]\n',
     "line 4: checks[0].range: bounds must be dates"),
    ('[[checks]]\nentity = "doctors"\ncolumn = "doctor_id"\nrequired_share = 50\nlevel = "error"\n',
     "line 5: checks[0].level: must be warning or critical"),
    ("checks = 3\n", "line 1: checks: must be an array of tables"),
    ("[metrics.id_completeness\nwarning = 1\n", "not valid TOML: "),
])
def test_every_mistake_is_one_line_with_the_key_and_its_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert str(error.value).startswith(f"quality contract {path}") and message in str(error.value)
    assert "\n" not in str(error.value) and error.value.exit_code == 2
    if "TOML" in message:
        assert "line 1" in str(error.value)


def test_a_pyproject_holds_the_contract_in_its_tool_table(tmp_path):
    text = ('[project]\nname = "x"\n\n[tool.healthtech-etl.quality.metrics.id_completeness]\ncritical = 90\n\n'
            '[[tool.healthtech-etl.quality.checks]]\nentity = "doctors"\ncolumn = "doctor_id"\nrequired_share = 500\n')
    with pytest.raises(ConfigError, match=r"line 10: tool\.healthtech-etl\.quality\.checks\[0\]\.required_share: must "):
        load(write(tmp_path, text, "pyproject.toml"))
    terms = load(write(tmp_path, text.replace("500", "50"), "pyproject.toml"))
    assert [m.critical for m in terms.metrics if m.key == "id_completeness"] == [90.0] and len(terms.checks) == 1
    with pytest.raises(ConfigError, match=r"has no \[tool\.healthtech-etl\.quality\] table"):
        load(write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml"))


def test_an_unreadable_contract_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the quality contract .*missing.toml"):
        load(tmp_path / "missing.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes("# caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(path)


def test_without_tomllib_nor_tomli_a_contract_asks_for_python_3_11_or_tomli(tmp_path, monkeypatch):
    path = write(tmp_path, "[metrics.id_completeness]\nwarning = 99\n")
    monkeypatch.setitem(sys.modules, "tomllib", None)  # an import of it raises ImportError
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert "Python 3.11+ or the tomli package" in str(error.value) and "\n" not in str(error.value)
    assert load(None) == Contract()  # the defaults need neither (the Glue job)


def test_tomli_stands_in_for_tomllib(tmp_path, monkeypatch):
    pytest.importorskip("tomli")
    monkeypatch.setitem(sys.modules, "tomllib", None)
    real_import = builtins.__import__
    seen = []
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: seen.append(name) or real_import(name, *a, **k))
    terms = load(write(tmp_path, "[metrics.id_completeness]\nwarning = 99\ncritical = 98\n"))
    assert "tomli" in seen and [m.warning for m in terms.metrics if m.key == "id_completeness"] == [99.0]
    assert contract.load(None).source == "built-in defaults"
