import json
import logging

from healthtech_etl.logs import LOG_FILE_NAME, REJECTIONS_LOGGER, configure_logging, log_lines


def test_bulk_lines_look_like_normal_log_lines(tmp_path):
    configure_logging(json_logs=False, log_dir=tmp_path)
    logger = logging.getLogger(REJECTIONS_LOGGER)
    logger.warning("single row=1")
    assert log_lines(logger, logging.WARNING, ["bulk row=2", "bulk row=3"]) == 2
    for handler in logging.getLogger("healthtech_etl").handlers:
        handler.flush()
    lines = (tmp_path / LOG_FILE_NAME).read_text().splitlines()
    assert len(lines) == 3
    prefix_single = lines[0].split(" healthtech_etl.rejections ")[0].split()[2:]
    assert all(" WARNING healthtech_etl.rejections " in line for line in lines)
    assert lines[1].endswith("bulk row=2") and lines[2].endswith("bulk row=3")
    assert prefix_single == ["WARNING"]


def test_json_lines(tmp_path, capsys):
    configure_logging(json_logs=True, log_dir=tmp_path)
    logger = logging.getLogger(REJECTIONS_LOGGER)
    log_lines(logger, logging.WARNING, ['row=2 reasons="quoted"', "row=3"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [entry["message"] for entry in out] == ['row=2 reasons="quoted"', "row=3"]
    assert all(entry["level"] == "WARNING" and entry["logger"] == REJECTIONS_LOGGER for entry in out)
    file_lines = [json.loads(line) for line in (tmp_path / LOG_FILE_NAME).read_text().splitlines()]
    assert [entry["message"] for entry in file_lines] == ['row=2 reasons="quoted"', "row=3"]
    configure_logging(json_logs=False, log_dir=None)


def test_nothing_logged_below_level(tmp_path):
    configure_logging(json_logs=False, log_dir=tmp_path, level="ERROR")
    assert log_lines(logging.getLogger(REJECTIONS_LOGGER), logging.WARNING, ["x"]) == 0
    configure_logging(json_logs=False, log_dir=None)


def test_log_rotates_by_size_for_bulk_and_single_lines(tmp_path):
    configure_logging(json_logs=False, log_dir=tmp_path, max_bytes=2_000, backups=2)
    logger = logging.getLogger(REJECTIONS_LOGGER)
    log_lines(logger, logging.WARNING, [f"rejected appointments row={n} id={n} reasons=x" for n in range(200)])
    logger.warning("one more")
    for handler in logging.getLogger("healthtech_etl").handlers:
        handler.flush()
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == [LOG_FILE_NAME, f"{LOG_FILE_NAME}.1", f"{LOG_FILE_NAME}.2"]
    assert all((tmp_path / name).stat().st_size <= 2_000 for name in files)
    assert (tmp_path / LOG_FILE_NAME).read_text().rstrip().endswith("one more")
    configure_logging(json_logs=False, log_dir=None)


def test_credentials_never_reach_the_log(tmp_path, capsys):
    configure_logging(json_logs=False, log_dir=tmp_path)
    logging.getLogger("healthtech_etl.test").error("bad url postgresql://u:1234/secret@host/db")
    try:
        raise ValueError("postgresql://u:TopSecret@h/db")
    except ValueError:
        logging.getLogger("healthtech_etl.test").exception("failed")
    for handler in logging.getLogger("healthtech_etl").handlers:
        handler.flush()
    text = (tmp_path / LOG_FILE_NAME).read_text() + capsys.readouterr().err
    assert "1234/secret" not in text and "TopSecret" not in text and "postgresql://***@host/db" in text
    configure_logging(json_logs=False, log_dir=None)


def test_a_log_dir_in_the_way_is_a_config_error(tmp_path):
    import pytest

    from healthtech_etl.errors import ConfigError

    blocker = tmp_path / "logs"
    blocker.write_text("a file")
    with pytest.raises(ConfigError, match="--log-dir .*logs is not a directory"):
        configure_logging(log_dir=blocker)
    with pytest.raises(ConfigError, match="cannot be created"):
        configure_logging(log_dir=blocker / "sub")
    configure_logging(json_logs=False, log_dir=None)
