"""Alembic migrations of the state store (run by StateStore.create_schema, never by hand)."""
