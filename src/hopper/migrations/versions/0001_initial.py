"""The ledger's first schema: file versions and their history.

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
        "files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.Column("dataset", sa.String(80)),
        sa.Column("ref", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("dispatch_id", sa.String(64)),
        sa.Column("dispatched_at", sa.Float),
        sa.Column("dispatch_count", sa.Integer, nullable=False),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.Column("outcome", sa.Text),
        sa.Column("detected_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("alert", sa.String(20)),
        sa.Column("alerted_at", sa.Float),
        sa.UniqueConstraint("uri", "fingerprint", name="uq_files_uri_fingerprint"),
    )
    op.create_index("ix_files_state", "files", ["state"])
    op.create_index("ix_files_alert", "files", ["alert"])
    op.create_table(
        "history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("event", sa.String(20), nullable=False),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_history_uri", "history", ["uri"])


def downgrade() -> None:
    op.drop_table("history")
    op.drop_table("files")
