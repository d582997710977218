"""The analysts' schema: decisions.unit_id, views with comments, foreign keys.

Views (docs/ANALYSTS.md has the data model and tested queries):

- ``outcomes``: one row per impression with its decision (policy, holdout,
  unit, context) and its final reward (explicit or default; NULL while the
  window is open; late rewards never count);
- ``daily_cells`` (materialised): counts and sums per experiment, UTC day of
  the decision, arm, group and slot, the base of ``arm_daily``,
  ``experiment_daily`` and ``lift_daily`` (plain views over it). Over 5
  million impressions of one experiment, the same aggregation as a plain view
  took 4.9-6 s for 30 days; from the materialised cells the daily views answer
  in about 2 ms. ``app.analytics.views.refresh_analyst_views`` refreshes it
  (about 7 s at 5 million impressions);
- ``config_history``: each config version's time in force and the keys it
  changed (``settings_diff``, a SQL function analysts can call on any two
  versions);
- ``pending_rewards``: impressions waiting for their reward, with the time
  their window closes;
- ``feature_columns``: the label of each position of ``decisions.features``.

Foreign keys: impressions -> decisions and rewards -> impressions, deferred to
the end of the transaction (the worker COPYs a batch's tables in one
transaction; a reward is logged only with its decision, app/quarantine.py).
decisions -> config_versions is left out: an API process announces a config
version to the stream once, so a decision whose version's announcement was
lost with Redis data (or dead-lettered) would be refused and dead-lettered
too, and the log would lose a decision the model learned from. The two
foreign keys cost the worker's log writes: on the 2-core box ``make bench``'s
drain phase fell from about 48,000 to 38,000-39,000 events/s (each checked
row locks its parent row), and ``EventLog.write_encoded`` of 2,000-decision
batches from 142,000 to 76,000 events/s.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Z95 = "1.96"  # the 95% normal quantile, rounded as usual (1.959964)
FINAL = "('explicit', 'default')"  # the kinds of reward that settle an impression

SETTINGS_DIFF = """
CREATE FUNCTION settings_diff(old jsonb, new jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
WITH top AS (
    SELECT key, old -> key AS o, new -> key AS n
    FROM (SELECT jsonb_object_keys(old) UNION SELECT jsonb_object_keys(new)) AS keys(key)
), flat AS (
    SELECT key, o, n FROM top
    WHERE o IS DISTINCT FROM n
      AND NOT (jsonb_typeof(o) = 'object' AND jsonb_typeof(n) = 'object')
    UNION ALL
    SELECT top.key || '.' || sub.key, top.o -> sub.key, top.n -> sub.key
    FROM top, LATERAL (
        SELECT jsonb_object_keys(top.o) UNION SELECT jsonb_object_keys(top.n)
    ) AS sub(key)
    WHERE jsonb_typeof(top.o) = 'object' AND jsonb_typeof(top.n) = 'object'
      AND top.o -> sub.key IS DISTINCT FROM top.n -> sub.key
)
SELECT coalesce(jsonb_object_agg(key, jsonb_build_object('old', o, 'new', n)), '{}'::jsonb)
FROM flat
$$
"""

OUTCOMES = f"""
CREATE VIEW outcomes AS
SELECT i.decision_id, i.experiment, i.decided_at,
       (i.decided_at AT TIME ZONE 'UTC')::date AS day,
       i.config_version, d.policy, d.policy = 'holdout' AS holdout, d.unit_id,
       d.request_id, d.model_id,
       i.arm, i.position, i.score, i.propensity, i.propensity_estimated,
       d.shown_count, d.candidates, d.context,
       r.reward, r.kind AS reward_kind, r.received_at AS rewarded_at
FROM impressions i
JOIN decisions d ON d.decision_id = i.decision_id
LEFT JOIN rewards r
       ON r.decision_id = i.decision_id AND r.arm = i.arm AND r.kind IN {FINAL}
"""

DAILY_CELLS = f"""
CREATE MATERIALIZED VIEW daily_cells AS
SELECT i.experiment, (i.decided_at AT TIME ZONE 'UTC')::date AS day, i.arm,
       d.policy = 'holdout' AS holdout, i.position = 0 AS top_slot,
       count(*) AS impressions,
       count(r.reward) AS rewarded,
       coalesce(sum(r.reward), 0) AS reward_sum,
       coalesce(sum(r.reward * r.reward), 0) AS reward_sumsq
FROM impressions i
JOIN decisions d ON d.decision_id = i.decision_id
LEFT JOIN rewards r
       ON r.decision_id = i.decision_id AND r.arm = i.arm AND r.kind IN {FINAL}
GROUP BY 1, 2, 3, 4, 5
WITH DATA
"""

ARM_DAILY = """
CREATE VIEW arm_daily AS
SELECT experiment, day, arm, holdout,
       sum(impressions)::bigint AS impressions,
       sum(rewarded)::bigint AS rewarded,
       sum(reward_sum) AS reward_sum,
       sum(reward_sum) / nullif(sum(rewarded), 0) AS mean_reward,
       coalesce(sum(impressions) FILTER (WHERE top_slot), 0)::bigint AS top_impressions
FROM daily_cells
GROUP BY experiment, day, arm, holdout
"""

EXPERIMENT_DAILY = f"""
CREATE VIEW experiment_daily AS
WITH g AS (
    SELECT experiment, day, holdout,
           coalesce(sum(impressions) FILTER (WHERE top_slot), 0)::bigint AS decisions,
           sum(impressions)::bigint AS impressions,
           coalesce(sum(rewarded) FILTER (WHERE top_slot), 0)::bigint AS rewarded,
           coalesce(sum(reward_sum) FILTER (WHERE top_slot), 0) AS reward_sum,
           coalesce(sum(reward_sumsq) FILTER (WHERE top_slot), 0) AS reward_sumsq
    FROM daily_cells
    GROUP BY experiment, day, holdout
), m AS (
    SELECT g.*, reward_sum / nullif(rewarded, 0) AS mean_reward,
           CASE WHEN rewarded >= 2 THEN sqrt(greatest(
               (reward_sumsq - reward_sum * reward_sum / rewarded) / (rewarded - 1), 0))
           END AS sd_reward
    FROM g
)
SELECT experiment, day, holdout, decisions, impressions, rewarded, mean_reward,
       mean_reward - {Z95} * sd_reward / sqrt(rewarded) AS ci_low,
       mean_reward + {Z95} * sd_reward / sqrt(rewarded) AS ci_high,
       sd_reward, reward_sum, reward_sumsq
FROM m
"""

LIFT_DAILY = f"""
CREATE VIEW lift_daily AS
WITH pair AS (
    SELECT experiment, day,
           max(mean_reward) FILTER (WHERE NOT holdout) AS policy_mean,
           max(mean_reward) FILTER (WHERE holdout) AS holdout_mean,
           coalesce(max(rewarded) FILTER (WHERE NOT holdout), 0) AS policy_n,
           coalesce(max(rewarded) FILTER (WHERE holdout), 0) AS holdout_n,
           max(sd_reward) FILTER (WHERE NOT holdout) AS policy_sd,
           max(sd_reward) FILTER (WHERE holdout) AS holdout_sd
    FROM experiment_daily
    GROUP BY experiment, day
), d AS (
    SELECT pair.*, policy_mean - holdout_mean AS lift,
           sqrt(policy_sd ^ 2 / policy_n + holdout_sd ^ 2 / holdout_n) AS lift_se
    FROM pair
)
SELECT experiment, day, policy_mean, holdout_mean, lift,
       lift - {Z95} * lift_se AS ci_low, lift + {Z95} * lift_se AS ci_high,
       lift / nullif(holdout_mean, 0) AS lift_relative,
       policy_n, holdout_n, lift_se
FROM d
"""

CONFIG_HISTORY = """
CREATE VIEW config_history AS
SELECT experiment, config_version,
       first_seen_at AS in_force_from,
       lead(first_seen_at) OVER w AS in_force_until,
       settings,
       lag(config_version) OVER w AS previous_version,
       CASE WHEN lag(config_version) OVER w IS NOT NULL
            THEN settings_diff(lag(settings) OVER w, settings) END AS changed
FROM config_versions
WINDOW w AS (PARTITION BY experiment ORDER BY first_seen_at, config_version)
"""

PENDING_REWARDS = f"""
CREATE VIEW pending_rewards AS
WITH p AS (
    SELECT i.decision_id, i.experiment, i.arm, i.position, i.decided_at, i.config_version,
           d.policy, d.policy = 'holdout' AS holdout, d.unit_id,
           (c.settings -> 'reward' ->> 'window_seconds')::float8 AS window_seconds,
           (c.settings -> 'reward' ->> 'default')::float8 AS default_reward
    FROM impressions i
    JOIN decisions d ON d.decision_id = i.decision_id
    LEFT JOIN config_versions c
           ON c.experiment = i.experiment AND c.config_version = i.config_version
    WHERE NOT EXISTS (
        SELECT 1 FROM rewards r
        WHERE r.decision_id = i.decision_id AND r.arm = i.arm AND r.kind IN {FINAL}
    )
)
SELECT p.*, decided_at + make_interval(secs => window_seconds) AS window_closes_at,
       decided_at + make_interval(secs => window_seconds) < now() AS overdue
FROM p
"""

FEATURE_COLUMNS = """
CREATE VIEW feature_columns AS
WITH spec AS (
    SELECT experiment, config_version,
           coalesce((settings -> 'features' ->> 'intercept')::boolean, true) AS intercept,
           coalesce(settings -> 'features' -> 'numeric', '[]'::jsonb) AS numeric,
           coalesce(settings -> 'features' -> 'categorical', '{}'::jsonb) AS categorical
    FROM config_versions
), entries AS (
    SELECT experiment, config_version, 0 AS block, 0::bigint AS major, 0::bigint AS minor,
           'intercept' AS kind, NULL::text AS feature, NULL::text AS value
    FROM spec WHERE intercept
    UNION ALL
    SELECT s.experiment, s.config_version, 1, n.ord, 0, 'numeric', n.name, NULL
    FROM spec s, jsonb_array_elements_text(s.numeric) WITH ORDINALITY AS n(name, ord)
    UNION ALL
    SELECT s.experiment, s.config_version, 2, c.ord, v.ord, 'categorical', c.key, v.value
    FROM spec s,
         jsonb_each(s.categorical) WITH ORDINALITY AS c(key, declared, ord),
         jsonb_array_elements_text(c.declared) WITH ORDINALITY AS v(value, ord)
)
SELECT e.experiment, e.config_version,
       (row_number() OVER w - 1)::int AS position,
       (row_number() OVER w)::int AS array_index,
       CASE e.kind WHEN 'intercept' THEN 'intercept'
                   WHEN 'numeric' THEN e.feature
                   ELSE e.feature || '=' || e.value END AS label,
       e.kind, e.feature, e.value,
       (SELECT count(*) FROM jsonb_object_keys(s.categorical)) <= 1 AS order_certain
FROM entries e
JOIN spec s USING (experiment, config_version)
WINDOW w AS (PARTITION BY e.experiment, e.config_version ORDER BY e.block, e.major, e.minor)
"""

VIEWS = (
    ("VIEW", "outcomes", OUTCOMES),
    ("MATERIALIZED VIEW", "daily_cells", DAILY_CELLS),
    ("VIEW", "arm_daily", ARM_DAILY),
    ("VIEW", "experiment_daily", EXPERIMENT_DAILY),
    ("VIEW", "lift_daily", LIFT_DAILY),
    ("VIEW", "config_history", CONFIG_HISTORY),
    ("VIEW", "pending_rewards", PENDING_REWARDS),
    ("VIEW", "feature_columns", FEATURE_COLUMNS),
)

# A decision's columns, shared by the tables and views that repeat them.
_C = {
    "decision_id": "the decision's id, as /choose answered it",
    "experiment": "the experiment's name in the config",
    "decided_at": "when /choose decided (the API's clock)",
    "config_version": "the config version in force (config_versions.config_version)",
    "policy": "the policy that decided: the config's (linucb, lin_ts, beta_ts, epsilon_greedy, "
    "random) or holdout",
    "holdout": "true if the holdout decided (policy = 'holdout'), the control group",
    "unit_id": "the user or session /choose named (assigns the holdout group); NULL if none",
    "arm": "the arm shown",
    "position": "the slot it was shown in; 0 is the top slot",
    "score": "the policy's score of the arm (for the holdout: its ranking score)",
    "propensity": "probability that the policy that decided puts this arm in this slot, "
    "given the slots above: the weight's denominator of an off-policy estimate",
    "propensity_estimated": "true if the propensity was estimated by sampling (lin_ts), "
    "false if exact",
    "day": "the UTC day of decided_at",
    "reward": "the final reward: explicit, else the default when the window closed; NULL "
    "while the window is open (late rewards never count)",
    "reward_kind": "explicit or default; NULL while the window is open",
    "rewarded_at": "when the final reward was received (a default: when the window closed)",
}

COMMENTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "config_versions": (
        "TABLE",
        "One row per experiment config version, logged when an API process first used it.",
        {
            "experiment": _C["experiment"],
            "config_version": "fingerprint of the normalised settings (12 hex characters)",
            "settings": "the experiment's config table, normalised (defaults filled in): policy, "
            "alpha, epsilon, arms, reward {default, window_seconds, min, max}, features, "
            "holdout, holdout_policy, ...",
            "first_seen_at": "when an API process first decided under this version",
        },
    ),
    "decisions": (
        "TABLE",
        "One row per /choose answer.",
        {
            "decision_id": _C["decision_id"],
            "experiment": _C["experiment"],
            "decided_at": _C["decided_at"],
            "config_version": _C["config_version"],
            "policy": _C["policy"],
            "model_id": "the model (feature layout and prior) that scored the arms",
            "request_id": "the idempotency key the request sent; NULL if none",
            "context": "the context as the request sent it (jsonb)",
            "features": "the encoded context vector x the policy saw; labels in feature_columns",
            "shown_count": "number of arms shown (impressions of this decision)",
            "propensity_estimated": _C["propensity_estimated"],
            "candidates": "the candidate arms the request named; NULL: every configured arm",
            "unit_id": _C["unit_id"],
        },
    ),
    "impressions": (
        "TABLE",
        "One row per arm shown by a decision.",
        {
            "decision_id": _C["decision_id"],
            "experiment": _C["experiment"],
            "arm": _C["arm"],
            "position": _C["position"],
            "score": _C["score"],
            "propensity": _C["propensity"],
            "propensity_estimated": _C["propensity_estimated"],
            "decided_at": _C["decided_at"] + " (copied from the decision)",
            "config_version": _C["config_version"],
        },
    ),
    "rewards": (
        "TABLE",
        "One row per reward of an impression: explicit, default or late.",
        {
            "decision_id": _C["decision_id"],
            "experiment": _C["experiment"],
            "arm": "the arm rewarded (an impression of the decision)",
            "reward": "the reward value",
            "kind": "explicit (from /reward inside the window), default (the window closed "
            "without one: the config's default) or late (after the window: logged, never "
            "learned)",
            "received_at": "when the reward arrived (a default: when the worker closed the window)",
            "stream_ms": "stream entry id, milliseconds part: the order the model learned in",
            "stream_seq": "stream entry id, sequence part",
        },
    ),
    "model_snapshots": (
        "TABLE",
        "Copies of the live model, one row per arm, all at one stream position; the rebuild "
        "starts from the latest one it can use.",
        {
            "experiment": _C["experiment"],
            "stream_ms": "stream entry id: the snapshot includes every reward learned up to it",
            "stream_seq": "stream entry id, sequence part",
            "model_id": "the model (feature layout and prior)",
            "arm": "the arm",
            "taken_at": "when the worker took the snapshot",
            "n": "rewards learned from (weighted)",
            "successes": "sum of rewards rescaled to [0, 1]",
            "failures": "sum of 1 - rescaled reward",
            "a": "A = ridge I + sum x x^T: d x d little-endian float64, row-major",
            "a_inv": "inverse of A, stored as a is",
            "b": "sum r x",
            "theta": "ridge estimate A^-1 b",
        },
    ),
    "impression_rewards": (
        "VIEW",
        "One row per impression with its explicit or default reward (outcomes adds the "
        "decision's columns).",
        {
            "decision_id": _C["decision_id"],
            "experiment": _C["experiment"],
            "arm": _C["arm"],
            "position": _C["position"],
            "score": _C["score"],
            "propensity": _C["propensity"],
            "propensity_estimated": _C["propensity_estimated"],
            "decided_at": _C["decided_at"],
            "config_version": _C["config_version"],
            "reward": _C["reward"],
            "reward_kind": _C["reward_kind"],
            "rewarded_at": _C["rewarded_at"],
        },
    ),
    "outcomes": (
        "VIEW",
        "One row per impression with its decision and its final reward (explicit or default; "
        "NULL while the window is open).",
        {
            **{
                k: _C[k]
                for k in (
                    "decision_id experiment decided_at day config_version policy holdout "
                    "unit_id arm position score propensity propensity_estimated reward "
                    "reward_kind rewarded_at"
                ).split()
            },
            "request_id": "the idempotency key the request sent; NULL if none",
            "model_id": "the model (feature layout and prior) that scored the arms",
            "shown_count": "number of arms the decision showed",
            "candidates": "the candidate arms the request named; NULL: every configured arm",
            "context": "the decision's context (jsonb): context->>'hour' is a field",
        },
    ),
    "daily_cells": (
        "MATERIALIZED VIEW",
        "Counts and sums of impressions and final rewards per experiment, UTC day, arm, group "
        "and slot: the base of arm_daily, experiment_daily and lift_daily. Refreshed by the "
        "worker (app.analytics.views.refresh_analyst_views), so it lags the log by minutes.",
        {
            "experiment": _C["experiment"],
            "day": _C["day"],
            "arm": _C["arm"],
            "holdout": _C["holdout"],
            "top_slot": "true for the top slot (position 0)",
            "impressions": "impressions",
            "rewarded": "impressions with a final reward",
            "reward_sum": "sum of the final rewards",
            "reward_sumsq": "sum of the squared final rewards",
        },
    ),
    "arm_daily": (
        "VIEW",
        "Per experiment, UTC day, arm and group: impressions (every slot) and final rewards. "
        "Reads daily_cells, refreshed every few minutes.",
        {
            "experiment": _C["experiment"],
            "day": _C["day"],
            "arm": _C["arm"],
            "holdout": _C["holdout"],
            "impressions": "impressions of the arm, every slot",
            "rewarded": "of those, impressions with a final reward",
            "reward_sum": "sum of the final rewards",
            "mean_reward": "reward_sum / rewarded; NULL if nothing is rewarded yet",
            "top_impressions": "impressions of the arm in the top slot",
        },
    ),
    "experiment_daily": (
        "VIEW",
        "Per experiment, UTC day and group (holdout or not): decisions, impressions, and the "
        "mean final reward of the top slot with its 95% normal interval. Reads daily_cells.",
        {
            "experiment": _C["experiment"],
            "day": _C["day"],
            "holdout": _C["holdout"],
            "decisions": "decisions (each shows one top slot)",
            "impressions": "impressions, every slot",
            "rewarded": "top-slot impressions with a final reward: the n of mean_reward",
            "mean_reward": "mean final reward of the top slot; NULL if rewarded = 0",
            "ci_low": "mean_reward - 1.96 sd_reward / sqrt(rewarded); NULL if rewarded < 2",
            "ci_high": "mean_reward + 1.96 sd_reward / sqrt(rewarded); NULL if rewarded < 2",
            "sd_reward": "sample standard deviation of the top slot's final rewards; NULL if "
            "rewarded < 2",
            "reward_sum": "sum of the top slot's final rewards (to pool days: sum them)",
            "reward_sumsq": "sum of their squares (to pool days' variances)",
        },
    ),
    "lift_daily": (
        "VIEW",
        "Per experiment and UTC day: the bandit's mean top-slot reward against the holdout's, "
        "their difference (lift) and its 95% Welch/normal interval.",
        {
            "experiment": _C["experiment"],
            "day": _C["day"],
            "policy_mean": "mean final top-slot reward of decisions not in the holdout",
            "holdout_mean": "mean final top-slot reward of holdout decisions",
            "lift": "policy_mean - holdout_mean",
            "ci_low": "lift - 1.96 lift_se; NULL if either group has fewer than 2 rewards",
            "ci_high": "lift + 1.96 lift_se; NULL if either group has fewer than 2 rewards",
            "lift_relative": "lift / holdout_mean; NULL if holdout_mean is 0 or missing",
            "policy_n": "rewarded top-slot impressions of the bandit",
            "holdout_n": "rewarded top-slot impressions of the holdout",
            "lift_se": "sqrt(sd_policy^2 / policy_n + sd_holdout^2 / holdout_n)",
        },
    ),
    "config_history": (
        "VIEW",
        "Each config version of an experiment, when it came into force and what it changed "
        "from the version before.",
        {
            "experiment": _C["experiment"],
            "config_version": "the config version",
            "in_force_from": "when an API process first decided under it "
            "(config_versions.first_seen_at)",
            "in_force_until": "the next version's in_force_from; NULL for the latest",
            "settings": "the version's settings (jsonb)",
            "previous_version": "the version before; NULL for the first",
            "changed": "settings_diff(previous settings, settings): {key: {old, new}} for each "
            "key that differs, nested tables as 'reward.window_seconds'; NULL for the first",
        },
    ),
    "pending_rewards": (
        "VIEW",
        "Impressions still waiting for their final reward, with the time their window closes.",
        {
            "decision_id": _C["decision_id"],
            "experiment": _C["experiment"],
            "arm": _C["arm"],
            "position": _C["position"],
            "decided_at": _C["decided_at"],
            "config_version": _C["config_version"],
            "policy": _C["policy"],
            "holdout": _C["holdout"],
            "unit_id": _C["unit_id"],
            "window_seconds": "the reward window of the decision's config version",
            "default_reward": "the reward logged if none arrives before the window closes",
            "window_closes_at": "decided_at + window_seconds",
            "overdue": "the window has closed but no default is logged yet: the worker is "
            "behind or stopped",
        },
    ),
    "feature_columns": (
        "VIEW",
        "The label of each position of decisions.features, per config version: intercept, "
        "numeric features, one-hot categories (bandits.features order).",
        {
            "experiment": _C["experiment"],
            "config_version": "the config version",
            "position": "0-based position in the vector (as in numpy)",
            "array_index": "1-based index: decisions.features[array_index]",
            "label": "intercept, the numeric feature's name, or name=value for a category",
            "kind": "intercept, numeric or categorical",
            "feature": "the feature's name; NULL for the intercept",
            "value": "the category's value; NULL unless categorical",
            "order_certain": "false if the config declares two or more categorical features: "
            "jsonb keeps their names sorted (shorter first), not in the declared order the "
            "encoding uses, so their blocks may be in another order than shown here",
        },
    ),
}

FOREIGN_KEYS = (
    (
        "impressions",
        "impressions_decision_fk",
        "FOREIGN KEY (decision_id) REFERENCES decisions (decision_id)",
    ),
    (
        "rewards",
        "rewards_impression_fk",
        "FOREIGN KEY (decision_id, arm) REFERENCES impressions (decision_id, arm)",
    ),
)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    op.execute("ALTER TABLE decisions ADD COLUMN unit_id text")
    for table, name, constraint in FOREIGN_KEYS:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} {constraint} "
            "DEFERRABLE INITIALLY DEFERRED"
        )
    op.execute(SETTINGS_DIFF)
    op.execute(
        "COMMENT ON FUNCTION settings_diff(jsonb, jsonb) IS "
        + _quote(
            "{key: {old, new}} for each top-level key whose value differs between two "
            "settings, and one level into nested tables (key 'reward.window_seconds'); "
            "a key absent on one side has null there"
        )
    )
    for _, _, sql in VIEWS:
        op.execute(sql)
    op.execute(
        "CREATE UNIQUE INDEX daily_cells_key "
        "ON daily_cells (experiment, day, arm, holdout, top_slot)"
    )
    for name, (kind, comment, columns) in COMMENTS.items():
        op.execute(f"COMMENT ON {kind} {name} IS {_quote(comment)}")
        for column, text in columns.items():
            op.execute(f"COMMENT ON COLUMN {name}.{column} IS {_quote(text)}")


def downgrade() -> None:
    for kind, name, _ in reversed(VIEWS):
        op.execute(f"DROP {kind} {name}")
    op.execute("DROP FUNCTION settings_diff(jsonb, jsonb)")
    for table, name, _ in FOREIGN_KEYS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    op.execute("ALTER TABLE decisions DROP COLUMN unit_id")
    for name, (kind, _, columns) in COMMENTS.items():
        if kind != "TABLE":
            continue
        op.execute(f"COMMENT ON TABLE {name} IS NULL")
        for column in columns:
            if (name, column) not in {("decisions", "candidates"), ("decisions", "unit_id")}:
                op.execute(f"COMMENT ON COLUMN {name}.{column} IS NULL")
    op.execute(
        "COMMENT ON VIEW impression_rewards IS NULL; "
        + "; ".join(
            f"COMMENT ON COLUMN impression_rewards.{c} IS NULL"
            for c in COMMENTS["impression_rewards"][2]
        )
    )
