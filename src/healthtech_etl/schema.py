"""What healthtech-etl stores, declared once: the tables (columns, types, keys), the reason codes
of rejected rows and the columns of the frames between the steps. The DDL, COPY encodings, staging
tables and query column lists are derived from here. Plain data: no pandas, no database."""

import re
from dataclasses import dataclass

from .exports import DEFAULT_SOURCE

SCHEMA = "healthtech"

# The workbooks' mandatory columns (header names, normalized).
DOCTOR_COLUMNS = ("doctor_id", "name", "specialty")
APPOINTMENT_COLUMNS = ("booking_id", "patient_id", "doctor_id", "booking_date", "status")
SOURCE_ROW = "source_row"  # the spreadsheet row a frame row came from
# A rejection frame: these columns, then the row's cells as read.
ENTITY = "entity"
RECORD_ID = "record_id"
REASONS = "reasons"  # the reason codes of the row, joined with ";"
REASON_SEPARATOR = ";"

MISSING_NAME = "missing_name"
INVALID_NAME = "invalid_name"
MISSING_BOOKING_DATE = "missing_booking_date"
INVALID_BOOKING_DATE = "invalid_booking_date"
BOOKING_DATE_OUT_OF_RANGE = "booking_date_out_of_range"
DUPLICATE_ROW = "duplicate_row"
DUPLICATE_DOCTOR_ID = "duplicate_doctor_id"
DUPLICATE_BOOKING_ID = "duplicate_booking_id"
UNKNOWN_DOCTOR = "unknown_doctor"
UNREADABLE_ROW = "unreadable_row"  # calamine could not hand the row over (a date cell past 9999)


def missing(column: str) -> str:
    """Code for an empty mandatory cell, e.g. ``missing_patient_id``."""
    return f"missing_{column}"


def invalid(column: str) -> str:
    """Code for a cell that is present but not a valid value, e.g. ``invalid_booking_id``."""
    return f"invalid_{column}"


# Every code a run can give, per entity (README "Data rules").
DOCTOR_REASONS = (
    missing("doctor_id"), invalid("doctor_id"), MISSING_NAME, INVALID_NAME, invalid("specialty"),
    DUPLICATE_ROW, DUPLICATE_DOCTOR_ID, UNREADABLE_ROW,
)
APPOINTMENT_REASONS = (
    missing("booking_id"), invalid("booking_id"), missing("patient_id"), invalid("patient_id"),
    missing("doctor_id"), invalid("doctor_id"), MISSING_BOOKING_DATE, INVALID_BOOKING_DATE,
    BOOKING_DATE_OUT_OF_RANGE, invalid("status"), DUPLICATE_ROW, DUPLICATE_BOOKING_ID, UNKNOWN_DOCTOR,
    UNREADABLE_ROW,
)
REASON_CODES = tuple(dict.fromkeys(DOCTOR_REASONS + APPOINTMENT_REASONS))

STATUSES = ("confirmed", "cancelled", "unknown")
LOAD_MODES = ("replace", "merge")
# "gated": the --fail-on quality gate stopped the run before its load (databases created before it
# are upgraded in place: see Column.widened).
RUN_STATUSES = ("running", "succeeded", "failed", "gated")
NOT_LOADED_STATUSES = ("failed", "gated")  # ended without loading anything


@dataclass(frozen=True)
class Column:
    """One column: ``type`` as the DDL writes it (and COPY encodes it); ``key``: part of the primary
    key; ``added``: databases created before it lack it; ``widened``: its CHECK (``x IN ('a', ...)``)
    allows values that databases created before lack (see :func:`create_statements`)."""

    name: str
    type: str
    null: bool = False
    key: bool = False
    check: str = ""
    default: str = ""
    references: str = ""
    added: bool = False
    widened: bool = False
    collate: str = ""  # e.g. "C": compared byte by byte (keys built ~2x faster than with the database's collation)

    def definition(self) -> str:
        parts = [self.name, self.type, f'COLLATE "{self.collate}"' if self.collate else "", "" if self.null else "NOT NULL"]
        parts += [f"DEFAULT {self.default}" if self.default else "", f"CHECK ({self.check})" if self.check else ""]
        parts.append(f"REFERENCES {SCHEMA}.{self.references}" if self.references else "")
        return " ".join(part for part in parts if part)


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]
    unique: bool = False
    where: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...] = ()
    # Table-level foreign keys: (constraint name, columns, referenced "table (columns)").
    foreign: tuple[tuple[str, str, str], ...] = ()

    @property
    def qualified(self) -> str:
        return f"{SCHEMA}.{self.name}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def key(self) -> tuple[str, ...]:
        """The primary key's columns: ``source`` first (declared last, as older databases got it)."""
        return tuple(sorted((column.name for column in self.columns if column.key), key=lambda name: name != "source"))

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    def types(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The declared types of ``names`` (KeyError for a column the table lacks)."""
        declared = {column.name: column.type for column in self.columns}
        unknown = [name for name in names if name not in declared]
        if unknown:
            raise KeyError(f"{self.qualified} has no column {', '.join(unknown)}")
        return tuple(declared[name] for name in names)


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{value}'" for value in values)


def _source(key: bool = True) -> Column:
    """The clinic a row belongs to; databases of releases before it get it, as 'default'."""
    return Column("source", "text", key=key, default=f"'{DEFAULT_SOURCE}'", added=True, collate="C")


# Ids are unique per source (clinic): the keys, and the foreign key, lead with it.
DOCTORS = Table("doctors", (
    Column("id", "bigint", key=True), Column("name", "text"), Column("specialty", "text", null=True), _source(),
))

APPOINTMENTS = Table("appointments", (
    Column("id", "bigint", key=True), Column("patient_id", "bigint"), Column("doctor_id", "bigint"),
    Column("booking_date", "timestamp"), Column("status", "text", check=f"status IN ({_quoted(STATUSES)})"), _source(),
), indexes=(
    # (doctor_id) serves the per-source foreign key's checks too; (source, doctor_id) was 3x slower to build.
    Index("appointments_doctor_id_idx", ("doctor_id",)),
    Index("appointments_patient_id_idx", ("patient_id",)),
), foreign=(("appointments_source_doctor_fkey", "source, doctor_id", "doctors (source, id)"),))

# The ledger: one row per run, whatever its outcome.
ETL_RUNS = Table("etl_runs", (
    Column("run_id", "text", key=True), Column("started_at", "timestamptz"),
    Column("finished_at", "timestamptz", null=True),
    Column("status", "text", check=f"status IN ({_quoted(RUN_STATUSES)})", widened=True),
    Column("doctors_file", "text", null=True), Column("doctors_sha256", "text", null=True),
    Column("appointments_file", "text", null=True), Column("appointments_sha256", "text", null=True),
    Column("counts", "jsonb", null=True), Column("metrics", "jsonb", null=True),
    Column("error", "text", null=True),
    Column("mode", "text", default="'replace'", check=f"mode IN ({_quoted(LOAD_MODES)})", added=True),
    _source(key=False), Column("export_date", "date", null=True, added=True),
))

ETL_REJECTIONS = Table("etl_rejections", (
    Column("id", "bigserial", key=True), Column("run_id", "text", references="etl_runs (run_id)"),
    Column("entity", "text"), Column("source_file", "text"), Column("row_number", "integer"),
    Column("record_id", "bigint", null=True), Column("reasons", "text[]"), Column("raw", "jsonb"),
    _source(key=False),
), indexes=(Index("etl_rejections_run_id_idx", ("run_id",)),))

# One row per version of an appointment, written by merge runs (see merge.py).
APPOINTMENT_HISTORY = Table("appointment_history", (
    Column("booking_id", "bigint", key=True), Column("patient_id", "bigint"), Column("doctor_id", "bigint"),
    Column("booking_date", "timestamp"), Column("status", "text"),
    Column("valid_from", "timestamptz", key=True),
    Column("valid_to", "timestamptz", null=True, check="valid_to >= valid_from"), Column("run_id", "text"),
    _source(),
), indexes=(
    Index("appointment_history_open_source_idx", ("source", "booking_id"), unique=True, where="valid_to IS NULL"),))

# Each loaded run's report and aggregates, so its page can be rebuilt (history.py creates it).
ETL_RUN_REPORTS = Table("etl_run_reports", (
    Column("run_id", "text", key=True, references="etl_runs (run_id) ON DELETE CASCADE"),
    Column("created_at", "timestamptz", default="now()"), Column("report", "jsonb"),
    Column("aggregates", "jsonb", null=True),
))

# What a load creates (in this order: a table before the tables referencing it).
LOAD_TABLES = (DOCTORS, APPOINTMENTS, ETL_RUNS, ETL_REJECTIONS, APPOINTMENT_HISTORY)
TABLES = LOAD_TABLES + (ETL_RUN_REPORTS,)

# The tables that record runs (never the data): all a run stopped by the quality gate writes.
LEDGER_TABLES = (ETL_RUNS, ETL_REJECTIONS, ETL_RUN_REPORTS)

# The columns of etl_rejections a load writes (its id is the server's).
REJECTION_COLUMNS = tuple(name for name in ETL_REJECTIONS.names if name != "id")
# The raw cells of a rejected row in the workbook's order (rejected_rows.csv: doctors', then appointments').
SHEET_COLUMNS = {"doctors": DOCTOR_COLUMNS, "appointments": APPOINTMENT_COLUMNS}

_CREATE_TABLE = "CREATE TABLE IF NOT EXISTS {table} (\n    {body}\n)"
_CREATE_INDEX = "CREATE {unique}INDEX IF NOT EXISTS {name} ON {table} ({columns}){where}"
# Guarded, because even a no-op ALTER TABLE locks the table against readers until COMMIT.
_ADD_COLUMN = """DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{table}'::regclass
                   AND attname = '{name}' AND NOT attisdropped) THEN
        ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {definition};
    END IF;
END $$"""
# A CHECK that lacks one of the values (an older release's): replaced, once, under the caller's lock.
_WIDEN_CHECK = """DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = '{table}'::regclass AND conname = '{constraint}'
                   AND pg_get_constraintdef(oid) LIKE ALL (ARRAY[{patterns}])) THEN
        ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint};
        ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK ({check});
    END IF;
END $$"""
# Keys of an older release (without source): rebuilt once; the foreign keys on them go with them.
_REKEY = """DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = '{table}'::regclass AND contype = 'p'
                   AND pg_get_constraintdef(oid) = 'PRIMARY KEY ({key})') THEN
        ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}_pkey CASCADE;
        ALTER TABLE {table} ADD CONSTRAINT {name}_pkey PRIMARY KEY ({key});
    END IF;
END $$"""
_ADD_FOREIGN = """DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = '{table}'::regclass AND conname = '{name}') THEN
        ALTER TABLE {table} ADD CONSTRAINT {name} {definition};
    END IF;
END $$"""
# Indexes of an older release that the keyed ones replace.
_RETIRED_INDEXES = ("appointment_history_open_idx",)
_DROP_RETIRED = """DO $$ BEGIN
    IF to_regclass('{index}') IS NOT NULL THEN DROP INDEX {index}; END IF;
END $$"""


def sql(template: str, **fragments: str) -> str:
    """``template`` with ``{doctors}``... as qualified names and ``fragments`` (ours, never input)."""
    return template.format(**{table.name: table.qualified for table in TABLES}, **fragments)


def create_statements(table: Table) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS``; for a table of an older release a guarded ``ADD COLUMN`` per
    ``added`` column, its widened CHECKs and its key rebuilt; then its indexes and foreign keys."""
    foreign = [(name, f"FOREIGN KEY ({columns}) REFERENCES {SCHEMA}.{target}") for name, columns, target in table.foreign]
    body = [column.definition() for column in table.columns] + [f"PRIMARY KEY ({', '.join(table.key)})"]
    body += [f"CONSTRAINT {name} {definition}" for name, definition in foreign]
    statements = [_CREATE_TABLE.format(table=table.qualified, body=",\n    ".join(body))]
    statements += [_ADD_COLUMN.format(table=table.qualified, name=column.name, definition=column.definition())
                   for column in table.columns if column.added]
    statements += [_widen_check(table, column) for column in table.columns if column.widened]
    if any(column.added for column in table.columns if column.key):
        statements.append(_REKEY.format(table=table.qualified, name=table.name, key=", ".join(table.key)))
    statements += [
        _CREATE_INDEX.format(unique="UNIQUE " if index.unique else "", name=index.name, table=table.qualified,
                             columns=", ".join(index.columns), where=f" WHERE {index.where}" if index.where else "")
        for index in table.indexes
    ]
    statements += [_ADD_FOREIGN.format(table=table.qualified, name=name, definition=definition)
                   for name, definition in foreign]
    return statements


def _widen_check(table: Table, column: Column) -> str:
    """The guarded replacement of ``column``'s CHECK (PostgreSQL's name for it), by its values."""
    patterns = ", ".join(f"'%''{value}''%'" for value in re.findall(r"'([^']*)'", column.check))
    return _WIDEN_CHECK.format(table=table.qualified, constraint=f"{table.name}_{column.name}_check",
                               patterns=patterns, check=column.check)


def schema_statements(tables: tuple[Table, ...] = LOAD_TABLES) -> list[str]:
    """The schema and ``tables`` (default: those a load writes), created if missing."""
    statements = [statement for table in tables for statement in create_statements(table)]
    retired = [_DROP_RETIRED.format(index=f"{SCHEMA}.{index}") for index in _RETIRED_INDEXES]
    return [f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}", *statements, *retired]


def staging_table(table: Table, name: str, extra: tuple[Column, ...] = ()) -> str:
    """A temporary table with ``table``'s columns (no constraints) and ``extra``, dropped at COMMIT."""
    columns = ", ".join(f"{column.name} {column.type}" for column in table.columns + extra)
    return f"CREATE TEMPORARY TABLE {name} ({columns}) ON COMMIT DROP"
