"""Sinks: stores fed as subscribers of the plant (Parquet, SQLite, PostgreSQL, Redis, Kafka).

Each sink is a supervised process (`streamctl.sinks.process`) running one loop
(`streamctl.sinks.runner`) around one store (`streamctl.sinks.stores`). This layer imports
only `bus` and `client`. See docs/sinks.md.
"""
