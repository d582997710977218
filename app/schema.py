"""The analyst-facing Postgres log, as SQLAlchemy Core tables.

One row per decision, one per shown arm (impression), one per reward
(explicit, default or late), one per config version, and periodic copies of
the live model (``model_snapshots``, one row per arm). Alembic migrations in
``migrations/`` create these, plus the analysts' views, comments and foreign
keys of migration 0004 (docs/ANALYSTS.md), which are not repeated here.
"""

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

config_versions = Table(
    "config_versions",
    metadata,
    Column("experiment", Text, nullable=False),
    Column("config_version", Text, nullable=False),
    Column("settings", JSONB, nullable=False, comment="the experiment's table, normalised"),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("experiment", "config_version"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("decision_id", Text, primary_key=True),
    Column("experiment", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("config_version", Text, nullable=False),
    Column("policy", Text, nullable=False),
    Column("model_id", Text, nullable=False, comment="feature layout and prior the model uses"),
    Column("request_id", Text),
    Column(
        "context",
        JSONB,
        nullable=False,
        comment="the context as scored: as sent, over the stored entities' features",
    ),
    Column("features", ARRAY(Float), nullable=False, comment="the encoded feature vector"),
    Column("shown_count", Integer, nullable=False),
    Column("propensity_estimated", Boolean, nullable=False),
    Column(
        "candidates",
        ARRAY(Text),
        comment="the candidate arms the request named; NULL: every configured arm",
    ),
    Column("unit_id", Text, comment="the user or session the request named (/choose unit_id)"),
    Index("decisions_experiment_decided_at", "experiment", "decided_at"),
)

impressions = Table(
    "impressions",
    metadata,
    Column("decision_id", Text, nullable=False),
    Column("experiment", Text, nullable=False),
    Column("arm", Text, nullable=False),
    Column("position", Integer, nullable=False, comment="0 is the top slot"),
    Column("score", Float, nullable=False),
    Column(
        "propensity",
        Float,
        nullable=False,
        comment="probability of this arm in this slot, given the slots above",
    ),
    Column("propensity_estimated", Boolean, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("config_version", Text, nullable=False),
    PrimaryKeyConstraint("decision_id", "arm"),
    Index("impressions_experiment_arm_decided_at", "experiment", "arm", "decided_at"),
)

rewards = Table(
    "rewards",
    metadata,
    Column("decision_id", Text, nullable=False),
    Column("experiment", Text, nullable=False),
    Column("arm", Text, nullable=False),
    Column("reward", Float, nullable=False),
    Column("kind", Text, nullable=False, comment="explicit, default (window closed) or late"),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("stream_ms", BigInteger, nullable=False, comment="stream entry id: the learning order"),
    Column("stream_seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("decision_id", "arm", "kind"),
    CheckConstraint("kind in ('explicit', 'default', 'late')", name="rewards_kind"),
    Index("rewards_experiment_stream", "experiment", "stream_ms", "stream_seq"),
)

model_snapshots = Table(
    "model_snapshots",
    metadata,
    Column("experiment", Text, nullable=False),
    Column(
        "stream_ms",
        BigInteger,
        nullable=False,
        comment="stream entry id: the snapshot includes every reward learned up to it",
    ),
    Column("stream_seq", BigInteger, nullable=False),
    Column("model_id", Text, nullable=False),
    Column("arm", Text, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
    Column("n", Float, nullable=False, comment="rewards learned from"),
    Column("successes", Float, nullable=False, comment="sum of rewards rescaled to [0, 1]"),
    Column("failures", Float, nullable=False, comment="sum of 1 - rescaled reward"),
    Column(
        "a",
        LargeBinary,
        nullable=False,
        comment="A = ridge I + sum x x^T: d x d little-endian float64, row-major",
    ),
    Column("a_inv", LargeBinary, nullable=False, comment="inverse of A, stored as a is"),
    Column("b", ARRAY(Float), nullable=False, comment="sum r x"),
    Column("theta", ARRAY(Float), nullable=False, comment="ridge estimate A^-1 b"),
    PrimaryKeyConstraint("experiment", "stream_ms", "stream_seq", "model_id", "arm"),
)
