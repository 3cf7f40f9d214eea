"""Alembic environment: migrates the connection StateStore hands over, in its own version table.

The version table is named for this project so the state store may share a database with Airflow's own
metadata (which keeps its alembic_version) without either migration history touching the other.
"""

from __future__ import annotations

from alembic import context

from dynamics_sync.state import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
