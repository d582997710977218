"""``segment_daily``: each segment's traffic and reward per day (experiments with segment_by).

A segmented experiment (``segment_by``) gives every value of a context field a
model of its own, under the model id ``<model_id>~<value>``; the decisions
log that model id. The analysts' daily views pool the segments of an
experiment; this view splits them: one row per experiment, segment, UTC day
of the decision, arm and group (``holdout``), with the impressions, the
settled (explicit or default) rewards and their mean. A plain view: it reads
the log each time, through the decisions' and impressions' per-day partitions
(filter on ``day`` or ``experiment`` to keep it short).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SEGMENT_DAILY = """
CREATE VIEW segment_daily AS
SELECT i.experiment,
       substr(d.model_id, strpos(d.model_id, '~') + 1) AS segment,
       (i.decided_at AT TIME ZONE 'UTC')::date AS day,
       i.arm,
       d.policy = 'holdout' AS holdout,
       count(*)::bigint AS impressions,
       count(r.reward)::bigint AS rewarded,
       coalesce(sum(r.reward), 0) AS reward_sum,
       sum(r.reward) / nullif(count(r.reward), 0) AS mean_reward
FROM impressions i
JOIN decisions d ON d.decision_id = i.decision_id AND d.log_day = i.log_day
LEFT JOIN rewards r
       ON r.decision_id = i.decision_id AND r.arm = i.arm AND r.log_day = i.log_day
      AND r.kind IN ('explicit', 'default')
WHERE strpos(d.model_id, '~') > 0
GROUP BY 1, 2, 3, 4, 5
"""


COLUMNS = {
    "experiment": "the experiment",
    "segment": "the segment: the value of the experiment's segment_by field",
    "day": "the UTC day of the decisions",
    "arm": "the arm shown",
    "holdout": "true: decided by the holdout, not the bandit",
    "impressions": "impressions of the arm (every slot)",
    "rewarded": "of them, with a settled (explicit or default) reward",
    "reward_sum": "the sum of those rewards",
    "mean_reward": "their mean (NULL while none is settled)",
}


def upgrade() -> None:
    op.execute(SEGMENT_DAILY)
    op.execute(
        "COMMENT ON VIEW segment_daily IS 'Per segment (segment_by value), UTC day, arm and "
        "group: impressions, settled rewards and their mean'"
    )
    for column, text in COLUMNS.items():
        quoted = text.replace("'", "''")
        op.execute(f"COMMENT ON COLUMN segment_daily.{column} IS '{quoted}'")


def downgrade() -> None:
    op.execute("DROP VIEW segment_daily")
