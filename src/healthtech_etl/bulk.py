"""Bulk writes inside a load's transaction: ``COPY ... FROM STDIN`` in PostgreSQL's binary format
(the one way rows reach a table in bulk, encoded by :mod:`healthtech_etl.copy_data` from the
declared column types), and dropping a table's keys and indexes around a large write to rebuild
them once afterwards."""

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import pandas as pd

from .copy_data import Chunk, copy_chunks
from .db import _short
from .schema import Table

logger = logging.getLogger(__name__)

# Row count from which a bulk write drops and rebuilds the table's indexes (see rebuilt_indexes).
REBUILD_MIN_ROWS = 50_000
_SAVEPOINT = "healthtech_bulk_load"


def copy_frame(connection: Any, table: Table, frame: pd.DataFrame, into: Optional[str] = None) -> None:
    """``COPY`` the rows of ``frame`` - whose columns are columns of ``table``, encoded by their
    declared types - into ``table`` or into ``into`` (a staging table with its columns)."""
    columns = tuple(frame.columns)
    send(connection, table, columns, copy_chunks(frame, table.types(columns)), into)


def encode(table: Table, frame: pd.DataFrame) -> list[Chunk]:
    """:func:`copy_frame`'s data for ``frame``, built in full (e.g. by a worker thread)."""
    return list(copy_chunks(frame, table.types(tuple(frame.columns))))


def send(connection: Any, table: Table, columns: tuple[str, ...], chunks: Iterable[Chunk],
         into: Optional[str] = None) -> None:
    """Send COPY data (each chunk one CopyData message: pg8000 1.28+ takes an iterable)."""
    stream: Iterator[memoryview] = (memoryview(chunk).cast("B") for chunk in chunks)
    # Identifiers from the schema declaration (or a staging table named by this package), never input.
    connection.run(f"COPY {into or table.qualified} ({', '.join(columns)}) FROM STDIN WITH (FORMAT binary)",
                   stream=stream)


@contextmanager
def rebuilt_indexes(connection: Any, table: Table, rows: int, keep_keys: bool = False) -> Iterator[None]:
    """Around a write of ``rows`` rows into ``table``: from :data:`REBUILD_MIN_ROWS` rows on,
    drop its keys, foreign keys and indexes first and recreate them afterwards from their exact
    definitions - one sort per index and one join per foreign key instead of a B-tree insertion
    and a trigger call per row (1M rows: ~1.5 s instead of ~6 s). ``keep_keys``: only the foreign
    keys and plain indexes (an upsert needs its key).

    Call it in the load's transaction, with the table locked against readers (TRUNCATE, or the
    upsert's row locks until COMMIT): a failure rolls it all back. If the role may not alter the
    table, the write runs with the indexes in place."""
    rebuild = drop_indexes(connection, table.qualified, keep_keys) if rows >= REBUILD_MIN_ROWS else []
    yield
    for statement in rebuild:
        connection.run(statement)


def drop_indexes(connection: Any, table: str, keep_keys: bool = False) -> list[str]:
    """Drop the keys, foreign keys and indexes of ``table``; return the statements that
    recreate them (keys, then indexes, then foreign keys). [] if they could not be dropped."""
    connection.run(f"SAVEPOINT {_SAVEPOINT}")
    try:
        keys = connection.run(
            "SELECT quote_ident(conname), pg_get_constraintdef(oid), contype = 'f' FROM pg_constraint"
            " WHERE conrelid = CAST(:table AS regclass) AND contype IN ('p', 'u', 'x', 'f')"
            " AND (contype = 'f' OR NOT :keep_keys) ORDER BY contype = 'f' DESC, conname",
            table=table,
            keep_keys=keep_keys,
        )
        indexes = connection.run(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_indexdef(c.oid)"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE i.indrelid = CAST(:table AS regclass) AND NOT EXISTS (SELECT 1 FROM pg_constraint k"
            " WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid) ORDER BY c.relname",
            table=table,
        )
        for name, _, _ in keys:  # foreign keys first
            connection.run(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        for name, _ in indexes:
            connection.run(f"DROP INDEX {name}")
        connection.run(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    except Exception as exc:  # e.g. not the table's owner, or another table references its key
        connection.run(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        logger.info("loading %s with its indexes in place: %s", table, _short(exc))
        return []
    add = [f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}" for name, definition, _ in keys]
    return (
        [statement for statement, (_, _, foreign) in zip(add, keys) if not foreign]
        + [definition for _, definition in indexes]
        + [statement for statement, (_, _, foreign) in zip(add, keys) if foreign]
    )
