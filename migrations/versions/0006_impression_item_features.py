"""Impressions keep the item features they were scored with; snapshots keep hybrid arms' B.

An experiment with ``model = "shared"`` or ``"hybrid"`` scores each candidate
from its item features, which a request sends inline or the feature store
supplies, and which may change later. So that a rebuild or an estimate replays
exactly what was scored, each impression of such a decision logs them: as
given (``item_features``, JSON, for people) and as encoded (``item_vector``,
in the config version's column order, for the replay). Both stay NULL for a
per-arm model. Adding a nullable column to the partitioned parent adds it to
every partition, without rewriting rows.

Off-policy estimates score a target policy on every candidate a decision had,
so a decision of an item model also logs all of its candidates' encoded item
features (``decisions.candidate_items``, row after row). A hybrid model's arm
also has a matrix ``B`` of its own (Li et al. 2010), which
a snapshot keeps in ``model_snapshots.extra`` (NULL for every other arm).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE impressions ADD COLUMN item_features jsonb")
    op.execute("ALTER TABLE impressions ADD COLUMN item_vector double precision[]")
    op.execute(
        "COMMENT ON COLUMN impressions.item_features IS "
        "'The item features the arm was scored with, as given (shared and hybrid models)'"
    )
    op.execute(
        "COMMENT ON COLUMN impressions.item_vector IS "
        "'The item features as encoded for the model, in the config version''s column order'"
    )
    op.execute("ALTER TABLE decisions ADD COLUMN candidate_items double precision[]")
    op.execute(
        "COMMENT ON COLUMN decisions.candidate_items IS "
        "'Every candidate''s encoded item features, row after row in candidate order "
        "(item models): what an off-policy estimate scores a target policy on'"
    )
    op.execute("ALTER TABLE model_snapshots ADD COLUMN extra bytea")
    op.execute(
        "COMMENT ON COLUMN model_snapshots.extra IS "
        "'A hybrid model''s arm: its B matrix (context x shared features), as a is stored'"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE model_snapshots DROP COLUMN extra")
    op.execute("ALTER TABLE decisions DROP COLUMN candidate_items")
    op.execute("ALTER TABLE impressions DROP COLUMN item_vector")
    op.execute("ALTER TABLE impressions DROP COLUMN item_features")
