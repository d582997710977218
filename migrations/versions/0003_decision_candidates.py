"""Decisions keep the candidate arms their request named.

Off-policy evaluation must give the target policy the same choice the logging
policy had: a request that named 5 of 50 arms chose among those 5. NULL means
the request named none, so every arm configured at the time was a candidate.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "decisions",
        sa.Column(
            "candidates",
            ARRAY(sa.Text),
            nullable=True,
            comment="the candidate arms the request named; NULL: every configured arm",
        ),
    )


def downgrade() -> None:
    op.drop_column("decisions", "candidates")
