"""The ledger's tables: one row per file version (``files``), one per transition (``history``).

The Alembic revisions in :mod:`hopper.migrations` keep their own frozen copy of these on
purpose; ``tests/unit/test_migrations.py`` checks that the two agree. A schema change is an
edit here plus a new revision there.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(200), nullable=False),
    sa.Column("dataset", sa.String(80)),
    sa.Column("ref", sa.Text, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("dispatch_id", sa.String(64)),
    sa.Column("dispatched_at", sa.Float),
    sa.Column("dispatch_count", sa.Integer, nullable=False, default=0),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("reason", sa.Text),
    sa.Column("outcome", sa.Text),
    sa.Column("detected_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("alert", sa.String(20)),  # None | pending | sent | digested
    sa.Column("alerted_at", sa.Float),
    # Source clean-up (after_ingest: archive | delete), settled once per ingested version:
    # when, what was done (archived | deleted | changed | gone), and where the archived copy is.
    sa.Column("cleaned_at", sa.Float),
    sa.Column("cleanup", sa.String(20)),
    sa.Column("archived_uri", sa.Text),
    sa.UniqueConstraint("uri", "fingerprint", name="uq_files_uri_fingerprint"),
    sa.Index("ix_files_state", "state"),
    sa.Index("ix_files_alert", "alert"),
    sa.Index("ix_files_flow_run_id", "flow_run_id"),
    sa.Index("ix_files_cleanup", "state", "cleaned_at"),
    sa.Index("ix_files_dataset_day", "dataset", "updated_at", "state"),  # the day's summary
)

history = sa.Table(
    "history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(200), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("event", sa.String(20), nullable=False),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Index("ix_history_uri", "uri"),
)
