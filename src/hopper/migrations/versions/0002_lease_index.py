"""Index files by flow run: a run renews its lease on its files every few seconds.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_files_flow_run_id", "files", ["flow_run_id"])


def downgrade() -> None:
    op.drop_index("ix_files_flow_run_id", table_name="files")
