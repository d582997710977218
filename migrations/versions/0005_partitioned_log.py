"""The log tables partitioned by day, so that retention drops whole days.

``decisions``, ``impressions`` and ``rewards`` become range-partitioned on a
new column ``log_day``: the UTC day the decision id embeds (the SQL function
``decision_log_day``, the same as ``app.retention.partitions.log_day``). A
unique key of a partitioned table must hold the partition column, and the
worker's exactly-once writes rely on those keys: ``log_day`` is a function of
the decision id, so adding it to every key changes nothing about what is a
repeat, and a decision, its impressions and its rewards share a partition,
which the foreign keys (now over ``(…, log_day)``) need. Ids that embed no
time get 1970-01-01 and land in the ``_default`` partition.

The foreign keys (same names) join each day's partitions, impressions_D ->
decisions_D and rewards_D -> impressions_D, not the partitioned parents: a
check against a partitioned parent plans a pruned query per row, and the
worker's log writes ran at 28,000 events/s against 64,000 before partitioning
(``python -m bench.scaling_costs --log-write-ab``); between partitions, a plain
index probe as before, and dropping a day needs no DETACH.

An existing log is copied into the new tables (one day partition per day
that has rows, and today plus the next 7 days), then the old tables are
dropped. The views over them (``outcomes``, ``daily_cells`` and the daily
views, ``pending_rewards``, ``impression_rewards``, and any other) are
re-created from their definitions in the database, with their comments and
indexes: they read the same columns and answer the same.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("decisions", "impressions", "rewards")  # referenced before referencing
KEYS = {
    "decisions": ("decision_id",),
    "impressions": ("decision_id", "arm"),
    "rewards": ("decision_id", "arm", "kind"),
}
FOREIGN_KEYS = {
    "impressions": ("impressions_decision_fk", ("decision_id",), "decisions"),
    "rewards": ("rewards_impression_fk", ("decision_id", "arm"), "impressions"),
}
DAYS_AHEAD = 7

LOG_DAY_FUNCTION = """
CREATE FUNCTION decision_log_day(decision_id text) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce(
    date '1970-01-01' + (('x' || lpad(substring(decision_id from ':([0-9a-f]{12})[0-9a-f]{16}$'),
                                      16, '0'))::bit(64)::bigint / 86400000)::int,
    date '1970-01-01')
$$
"""
LOG_DAY_COMMENT = (
    "the UTC day the decision id embeds (decision_log_day(decision_id)): the day "
    "partition the row is in; 1970-01-01 for an id that embeds none, and for a row "
    "inserted without it (not by banditd's worker)"
)

RETENTION_COLUMNS = {
    "experiment": "the experiment's name in the config",
    "base_ms": "stream entry id of the snapshot a whole-log replay starts from, milliseconds",
    "base_seq": "stream entry id of that snapshot, sequence part",
    "dropped_before": "every day before it was dropped (or its rows deleted) by retention",
    "applied_at": "when retention last dropped or deleted rows",
}

DEPENDENT_VIEWS = """
WITH RECURSIVE deps(oid, level) AS (
    SELECT r.ev_class, 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = ANY(CAST(:tables AS oid[]))
      AND r.ev_class <> d.refobjid
    UNION
    SELECT r.ev_class, deps.level + 1 FROM pg_depend d
    JOIN pg_rewrite r ON r.oid = d.objid
    JOIN deps ON d.refobjid = deps.oid
    WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class <> d.refobjid
)
SELECT c.oid, c.relname, c.relkind, max(level) AS level,
       pg_get_viewdef(c.oid) AS definition, obj_description(c.oid, 'pg_class') AS comment
FROM deps JOIN pg_class c ON c.oid = deps.oid
GROUP BY c.oid, c.relname, c.relkind
ORDER BY level, c.oid
"""


def _quote(text):
    return "NULL" if text is None else "'" + text.replace("'", "''") + "'"


def _views(conn):
    """Every view that reads the log tables, with what re-creating it takes."""
    oids = [conn.execute(sa.text(f"SELECT '{t}'::regclass::oid")).scalar() for t in TABLES]
    views = []
    for v in conn.execute(sa.text(DEPENDENT_VIEWS), {"tables": oids}).all():
        columns = conn.execute(
            sa.text(
                "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
                "WHERE attrelid = :oid AND attnum > 0 AND NOT attisdropped "
                "AND col_description(attrelid, attnum) IS NOT NULL"
            ),
            {"oid": v.oid},
        ).all()
        indexes = conn.execute(
            sa.text("SELECT indexdef FROM pg_indexes WHERE tablename = :name"),
            {"name": v.relname},
        ).scalars()
        views.append((v, columns, list(indexes)))
    return views


def _drop_views(views):
    for v, _, _ in reversed(views):
        kind = "MATERIALIZED VIEW" if v.relkind == "m" else "VIEW"
        op.execute(f"DROP {kind} {v.relname}")


def _create_views(views):
    for v, columns, indexes in views:
        if v.relkind == "m":
            op.execute(f"CREATE MATERIALIZED VIEW {v.relname} AS {v.definition.rstrip(';')}")
        else:
            op.execute(f"CREATE VIEW {v.relname} AS {v.definition}")
        for index in indexes:
            op.execute(index)
        kind = "MATERIALIZED VIEW" if v.relkind == "m" else "VIEW"
        op.execute(f"COMMENT ON {kind} {v.relname} IS {_quote(v.comment)}")
        for column, comment in columns:
            op.execute(f"COMMENT ON COLUMN {v.relname}.{column} IS {_quote(comment)}")


def _set_aside(conn, table):
    """Rename ``table`` and its indexes out of the way; returns its other indexes' definitions."""
    comment = conn.execute(sa.text(f"SELECT obj_description('{table}'::regclass)")).scalar()
    indexes = conn.execute(
        sa.text(
            "SELECT i.relname, pg_get_indexdef(i.oid), x.indisprimary FROM pg_index x "
            "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = CAST(:t AS regclass)"
        ),
        {"t": table},
    ).all()
    op.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    for name, _, _ in indexes:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}_old")
    others = [
        definition.replace(f" ON ONLY public.{table} ", f" ON {table} ").replace(
            f" ON public.{table} ", f" ON {table} "
        )
        for _, definition, primary in indexes
        if not primary
    ]
    return comment, others


def upgrade() -> None:
    conn = op.get_bind()
    op.execute(LOG_DAY_FUNCTION)
    op.execute(
        "COMMENT ON FUNCTION decision_log_day(text) IS "
        + _quote("the UTC day a decision id embeds; 1970-01-01 if it embeds none")
    )
    views = _views(conn)
    _drop_views(views)
    days = set(
        conn.execute(
            sa.text("SELECT DISTINCT decision_log_day(decision_id) FROM decisions")
        ).scalars()
    )
    today = dt.datetime.now(dt.timezone.utc).date()
    days |= {today + dt.timedelta(days=n) for n in range(DAYS_AHEAD + 1)}
    days.discard(dt.date(1970, 1, 1))
    for table in reversed(TABLES):  # the referencing constraints go with the old tables
        if table in FOREIGN_KEYS:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {FOREIGN_KEYS[table][0]}")
    for table in TABLES:
        comment, indexes = _set_aside(conn, table)
        op.execute(
            f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING COMMENTS, log_day date NOT NULL DEFAULT date '1970-01-01') "
            "PARTITION BY RANGE (log_day)"
        )
        op.execute(f"COMMENT ON TABLE {table} IS {_quote(comment)}")
        op.execute(f"COMMENT ON COLUMN {table}.log_day IS {_quote(LOG_DAY_COMMENT)}")
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        for day in sorted(days):
            op.execute(
                f"CREATE TABLE {table}_{day:%Y%m%d} PARTITION OF {table} "
                f"FOR VALUES FROM ('{day}') TO ('{day + dt.timedelta(days=1)}')"
            )
        op.execute(f"INSERT INTO {table} SELECT *, decision_log_day(decision_id) FROM {table}_old")
        op.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(KEYS[table])}, log_day)")
        for index in indexes:
            op.execute(index)
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE {table}_old")
    for suffix in ["default"] + [f"{day:%Y%m%d}" for day in sorted(days)]:
        for table, (name, columns, parent) in FOREIGN_KEYS.items():
            key = ", ".join(columns) + ", log_day"
            op.execute(
                f"ALTER TABLE {table}_{suffix} ADD CONSTRAINT {name} FOREIGN KEY ({key}) "
                f"REFERENCES {parent}_{suffix} ({key}) DEFERRABLE INITIALLY DEFERRED"
            )
    _create_views(views)
    op.execute(
        "CREATE TABLE log_retention ("
        " experiment text PRIMARY KEY,"
        " base_ms bigint NOT NULL, base_seq bigint NOT NULL,"
        " dropped_before date NOT NULL, applied_at timestamptz NOT NULL)"
    )
    op.execute(
        "COMMENT ON TABLE log_retention IS "
        + _quote(
            "Per experiment, the model snapshot the log is replayed from since retention "
            "dropped older rows (kept by snapshot pruning), and the first day still logged"
        )
    )
    for column, text in RETENTION_COLUMNS.items():
        op.execute(f"COMMENT ON COLUMN log_retention.{column} IS {_quote(text)}")


def downgrade() -> None:
    conn = op.get_bind()
    op.execute("DROP TABLE log_retention")
    views = _views(conn)
    _drop_views(views)
    for table in TABLES:  # the partitions' foreign keys go with them
        comment, indexes = _set_aside(conn, table)
        op.execute(
            f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING COMMENTS)"
        )
        op.execute(f"ALTER TABLE {table} DROP COLUMN log_day")
        op.execute(f"COMMENT ON TABLE {table} IS {_quote(comment)}")
        columns = conn.execute(
            sa.text(
                "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
                "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"
            ),
            {"t": table},
        ).scalar()
        op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_old")
        op.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(KEYS[table])})")
        for index in indexes:
            op.execute(index)
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE {table}_old")
    for table, (name, columns, parent) in FOREIGN_KEYS.items():
        key = ", ".join(columns)
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({key}) "
            f"REFERENCES {parent} ({key}) DEFERRABLE INITIALLY DEFERRED"
        )
    _create_views(views)
    op.execute("DROP FUNCTION decision_log_day(text)")
