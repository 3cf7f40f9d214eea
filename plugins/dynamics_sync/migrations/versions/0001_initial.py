"""The initial state store: links, snapshots, watermarks, activity_log, run_summary.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_links",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("dynamics_id", sa.String(64), nullable=False),
        sa.Column("marketo_id", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("entity", "dynamics_id", name="uq_links_entity_dynamics"),
        sa.UniqueConstraint("marketo_id", name="uq_links_marketo"),
    )
    op.create_table(
        "snapshots",
        sa.Column("link_id", sa.Integer, sa.ForeignKey("record_links.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dynamics_values", sa.JSON, nullable=False),
        sa.Column("marketo_values", sa.JSON, nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(250)),
    )
    op.create_table(
        "watermarks",
        sa.Column("entity", sa.String(64), primary_key=True),
        sa.Column("side", sa.String(16), primary_key=True),
        sa.Column("value", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(250)),
    )
    op.create_table(
        "activity_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.String(250)) for name in ("dag_id", "run_id", "task_id")),
        sa.Column("entity", sa.String(64)),
        sa.Column("direction", sa.String(32)),
        sa.Column("dynamics_id", sa.String(64)),
        sa.Column("marketo_id", sa.BigInteger),
        sa.Column("email", sa.String(320)),
        sa.Column("activity_type", sa.String(64), nullable=False),
        sa.Column("field", sa.String(128)),
        *(sa.Column(name, sa.Text) for name in ("old_value", "new_value", "reason")),
    )
    op.create_index("ix_activity_email", "activity_log", ["email"])
    op.create_index("ix_activity_dynamics_id", "activity_log", ["dynamics_id"])
    op.create_index("ix_activity_marketo_id", "activity_log", ["marketo_id"])
    op.create_index("ix_activity_run", "activity_log", ["dag_id", "run_id"])
    op.create_table(
        "run_summary",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("direction", sa.String(32), nullable=False),
        *(sa.Column(name, sa.Integer, nullable=False) for name in ("created", "updated", "rejected", "collisions",
                                                                    "echoes")),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_summary_run", "run_summary", ["dag_id", "run_id"])


def downgrade() -> None:
    for table in ("run_summary", "activity_log", "watermarks", "snapshots", "record_links"):
        op.drop_table(table)
