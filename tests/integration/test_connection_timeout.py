"""``connect_timeout`` bounds connecting only, never a statement (pg8000 would keep it on the
socket): a load that waits for the lock, or rebuilds indexes, longer than it must not fail."""

import dataclasses

from healthtech_etl.db import close_quietly, connect


def test_a_statement_may_outlast_the_connect_timeout(db_config):
    connection = connect(dataclasses.replace(db_config, connect_timeout=1))
    try:
        # The server answers after 1.5 s: longer than the 1 s connect timeout.
        rows = connection.run("SELECT 1, current_setting('statement_timeout') FROM pg_sleep(1.5)")
        assert rows == [[1, "30min"]]
    finally:
        close_quietly(connection)
