"""Replayed failures: activity_log.resolved_at, resolution and resolved_by_run.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("activity_log") as batch:
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("resolution", sa.String(32)))
        batch.add_column(sa.Column("resolved_by_run", sa.String(250)))


def downgrade() -> None:
    with op.batch_alter_table("activity_log") as batch:
        for column in ("resolved_by_run", "resolution", "resolved_at"):
            batch.drop_column(column)
