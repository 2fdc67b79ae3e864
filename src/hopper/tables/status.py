"""What a dataset's table holds now, as ``hopper status`` shows it (read from metadata only)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from hopper.config import HopperConfig
from hopper.tables.catalog import open_catalog, table_identifier


class TableStatus(BaseModel):
    """A table's current snapshot, from its summary (no data file is read)."""

    table: str = Field(description="<namespace>.<dataset>.")
    location: str = Field(description="Where its data and metadata are.")
    snapshot_id: int | None = Field(description="The current snapshot; None while empty.")
    committed_at_ms: int | None = Field(description="When that snapshot was committed.")
    data_files: int = Field(description="Data files in the current snapshot.")
    rows: int = Field(description="Rows in the current snapshot.")
    snapshots: int = Field(description="Snapshots kept (time travel reaches back this far).")


def table_status(config: HopperConfig, dataset: str) -> TableStatus | None:
    """The status of ``dataset``'s table, or None if it has none yet."""
    from pyiceberg.exceptions import NoSuchTableError

    try:
        table = open_catalog(config).load_table(table_identifier(config, dataset))
    except NoSuchTableError:
        return None
    current = table.current_snapshot()
    summary = current.summary if current is not None and current.summary else None
    totals = summary.additional_properties if summary is not None else {}
    return TableStatus(
        table=table_identifier(config, dataset),
        location=table.location(),
        snapshot_id=current.snapshot_id if current is not None else None,
        committed_at_ms=current.timestamp_ms if current is not None else None,
        data_files=int(totals.get("total-data-files", 0)),
        rows=int(totals.get("total-records", 0)),
        snapshots=len(table.metadata.snapshots),
    )
