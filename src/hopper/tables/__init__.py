"""The table lake: each dataset an Apache Iceberg table, one commit per batch.

- :mod:`~hopper.tables.catalog`: which catalog, which table, where (embedded SQLite by
  default; PostgreSQL, REST, Glue or Hive through ``lake.catalog``);
- :mod:`~hopper.tables.schema`: the table's schema and partition spec from rows and
  contract, and how it may evolve;
- :mod:`~hopper.tables.commit`: a batch's staged sources committed exactly once;
- :mod:`~hopper.tables.maintain`: upkeep (compaction, snapshot expiry, orphan files);
- :mod:`~hopper.tables.status`: what a table holds now, for ``hopper status``.

The reader processes only stage rows (:mod:`hopper.sink.table_stage`); everything here runs
in the flow run, after the batch's files are read.
"""

from hopper.tables.catalog import open_catalog, table_identifier
from hopper.tables.commit import land

__all__ = ["land", "open_catalog", "table_identifier"]
