"""The initial event log: config versions, decisions, impressions, rewards.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "config_versions",
        sa.Column("experiment", sa.Text, nullable=False),
        sa.Column("config_version", sa.Text, nullable=False),
        sa.Column("settings", JSONB, nullable=False),
        sa.Column("first_seen_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("experiment", "config_version"),
    )
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.Text, primary_key=True),
        sa.Column("experiment", sa.Text, nullable=False),
        sa.Column("decided_at", TZ, nullable=False),
        sa.Column("config_version", sa.Text, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text),
        sa.Column("context", JSONB, nullable=False),
        sa.Column("features", sa.ARRAY(sa.Float), nullable=False),
        sa.Column("shown_count", sa.Integer, nullable=False),
        sa.Column("propensity_estimated", sa.Boolean, nullable=False),
    )
    op.create_index("decisions_experiment_decided_at", "decisions", ["experiment", "decided_at"])
    op.create_table(
        "impressions",
        sa.Column("decision_id", sa.Text, nullable=False),
        sa.Column("experiment", sa.Text, nullable=False),
        sa.Column("arm", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("propensity", sa.Float, nullable=False),
        sa.Column("propensity_estimated", sa.Boolean, nullable=False),
        sa.Column("decided_at", TZ, nullable=False),
        sa.Column("config_version", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "arm"),
    )
    op.create_index(
        "impressions_experiment_arm_decided_at", "impressions", ["experiment", "arm", "decided_at"]
    )
    op.create_table(
        "rewards",
        sa.Column("decision_id", sa.Text, nullable=False),
        sa.Column("experiment", sa.Text, nullable=False),
        sa.Column("arm", sa.Text, nullable=False),
        sa.Column("reward", sa.Float, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("stream_ms", sa.BigInteger, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "arm", "kind"),
        sa.CheckConstraint("kind in ('explicit', 'default', 'late')", name="rewards_kind"),
    )
    op.create_index(
        "rewards_experiment_stream", "rewards", ["experiment", "stream_ms", "stream_seq"]
    )
    op.execute("""
        CREATE VIEW impression_rewards AS
        SELECT i.decision_id, i.experiment, i.arm, i.position, i.score, i.propensity,
               i.propensity_estimated, i.decided_at, i.config_version,
               r.reward, r.kind AS reward_kind, r.received_at AS rewarded_at
        FROM impressions i
        LEFT JOIN rewards r
          ON r.decision_id = i.decision_id AND r.arm = i.arm AND r.kind <> 'late'
    """)


def downgrade() -> None:
    op.execute("DROP VIEW impression_rewards")
    for table in ("rewards", "impressions", "decisions", "config_versions"):
        op.drop_table(table)
