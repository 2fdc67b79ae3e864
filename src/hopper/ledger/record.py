"""One file version as the ledger knows it (:class:`FileRecord`), read from a ``files`` row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

from hopper.models import FileRef, FileState


class Awaiting(NamedTuple):
    """A dispatched version whose flow run the watcher has not seen yet (only what it needs)."""

    uri: str
    fingerprint: str
    dispatch_id: str | None
    dispatched_at: float | None


@dataclass(frozen=True)
class FileRecord:
    """One file version as the ledger knows it."""

    uri: str
    fingerprint: str
    dataset: str | None
    state: FileState
    ref: FileRef
    dispatch_id: str | None
    dispatched_at: float | None
    dispatch_count: int
    flow_run_id: str | None
    reason: str | None
    outcome: dict[str, Any] | None
    detected_at: float
    updated_at: float
    alert: str | None = None
    alerted_at: float | None = None
    cleaned_at: float | None = None
    cleanup: str | None = None  # archived | deleted | changed | gone (see hopper.cleanup)
    archived_uri: str | None = None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> FileRecord:
        m = row._mapping
        return cls(
            uri=m["uri"],
            fingerprint=m["fingerprint"],
            dataset=m["dataset"],
            state=FileState(m["state"]),
            ref=FileRef.model_validate_json(m["ref"]),
            dispatch_id=m["dispatch_id"],
            dispatched_at=m["dispatched_at"],
            dispatch_count=m["dispatch_count"] or 0,
            flow_run_id=m["flow_run_id"],
            reason=m["reason"],
            outcome=json.loads(m["outcome"]) if m["outcome"] else None,
            detected_at=m["detected_at"],
            updated_at=m["updated_at"],
            alert=m["alert"],
            alerted_at=m["alerted_at"],
            cleaned_at=m["cleaned_at"],
            cleanup=m["cleanup"],
            archived_uri=m["archived_uri"],
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, as printed by ``hopper status --json``."""
        return {
            "uri": self.uri,
            "fingerprint": self.fingerprint,
            "dataset": self.dataset,
            "state": self.state.value,
            "dispatch_count": self.dispatch_count,
            "flow_run_id": self.flow_run_id,
            "reason": self.reason,
            "outcome": self.outcome,
            "detected_at": self.detected_at,
            "updated_at": self.updated_at,
            "cleanup": self.cleanup,
            "cleaned_at": self.cleaned_at,
            "archived_uri": self.archived_uri,
        }
