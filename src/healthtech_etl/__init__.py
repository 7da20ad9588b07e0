"""healthtech-etl: clean clinic Excel exports and load them into PostgreSQL.

Public API (everything else is an implementation detail):

- :func:`healthtech_etl.pipeline.run_etl` - extract -> clean -> quality report -> load, one run.
- :func:`healthtech_etl.queries.run_queries` - answer the business questions in ``sql/``.
- :class:`healthtech_etl.db.DbConfig` - where the database is (URL, env, Secrets Manager JSON).
"""

__version__ = "1.0.0"
