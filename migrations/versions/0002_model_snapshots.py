"""Model snapshots: the live parameters of every arm at a stream position.

The d x d matrices A and A_inv are bytea (row-major little-endian float64, as
in Redis); b and theta are float8[]. The matrices are the bulk of a snapshot
(2 d^2 values against 2 d) and only a restore reads them: as float8[] text a
snapshot of 20 arms at d = 32 took about 0.15 s to write, most of it formatting
and parsing decimal text, time the worker would not be learning; as bytes it is
a small fraction of that, and bit-exact by construction. The vectors and
counts stay readable in SQL (theta per arm over time), and float8[] restores
them exactly too: Postgres 12+ prints a float8 in the shortest form that reads
back to the same double.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_snapshots",
        sa.Column("experiment", sa.Text, nullable=False),
        sa.Column("stream_ms", sa.BigInteger, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("arm", sa.Text, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("n", sa.Float, nullable=False),
        sa.Column("successes", sa.Float, nullable=False),
        sa.Column("failures", sa.Float, nullable=False),
        sa.Column("a", sa.LargeBinary, nullable=False),
        sa.Column("a_inv", sa.LargeBinary, nullable=False),
        sa.Column("b", sa.ARRAY(sa.Float), nullable=False),
        sa.Column("theta", sa.ARRAY(sa.Float), nullable=False),
        sa.PrimaryKeyConstraint("experiment", "stream_ms", "stream_seq", "model_id", "arm"),
    )


def downgrade() -> None:
    op.drop_table("model_snapshots")
