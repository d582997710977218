"""``banditd export``: an experiment's decisions, impressions and rewards as partitioned Parquet.

- ``columns``: each table's columns, read from ``information_schema`` (so a
  column a later migration adds is exported too), and their Arrow types;
- ``postgres``: rows streamed as ``COPY`` output, a bounded chunk at a time;
- ``parquet``: chunks parsed and written a row group at a time, one file per
  table and day, and the swap that replaces a day's files;
- ``exporter``: one export in one snapshot; ``cli``: the command.

Nothing here is imported by the other commands: pyarrow loads only for an export.
"""
