"""healthtech-etl: clean clinic Excel exports and load them into PostgreSQL.

Public API: :func:`.pipeline.run_etl` (one run), :func:`.queries.run_queries` (the business
questions in ``sql/``) and :class:`.db.DbConfig` (where the database is); the rest is internal."""

__version__ = "1.0.0"
