"""A decision's candidates and their item vectors are compressed with lz4, not pglz.

An item model's decision logs every candidate's encoded item features
(``decisions.candidate_items``: 25.6 KB at 200 candidates of 16 features) and
the candidates' ids (``decisions.candidates``). Postgres compresses a value that
large before storing it out of line, with pglz unless told otherwise, and pglz
cost the server about 360 µs of CPU per such decision on this project's 2-core
box (a COPY of 1,000 rows of 3,200 floats: 510 µs of backend CPU per row with
pglz, 190 µs with lz4, 150 µs stored uncompressed; 16.7, 16.5 and 26.4 KB on
disk): CPU taken from the API processes that share the box. lz4 keeps the
space pglz saves at a fraction of the CPU.

Set on the partitioned tables (new day partitions inherit it) and on every
existing partition. Values already stored keep their pglz compression (they
are read as before); nothing is rewritten. Where the server has no lz4
(built without it, or older than PostgreSQL 14) the columns are left as they
were, with a notice: everything works as before, at pglz's cost.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = ("candidates", "candidate_items")


def _set_compression(method: str) -> str:
    alter = ", ".join(f"ALTER COLUMN {c} SET COMPRESSION {method}" for c in COLUMNS)
    return f"""
DO $$
DECLARE
    part regclass;
BEGIN
    IF current_setting('server_version_num')::int < 140000 THEN
        RAISE NOTICE 'PostgreSQL before 14 has no per-column compression: decisions keep pglz';
        RETURN;
    END IF;
    EXECUTE 'ALTER TABLE decisions {alter}';
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                WHERE inhparent = 'decisions'::regclass LOOP
        EXECUTE format('ALTER TABLE %s {alter}', part);
    END LOOP;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4 compression: decisions keep pglz';
END
$$
"""


def upgrade() -> None:
    op.execute(_set_compression("lz4"))


def downgrade() -> None:
    op.execute(_set_compression("default"))
