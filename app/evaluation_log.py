"""What ``banditd evaluate`` reads from the Postgres log.

The evaluation window (slot-0 impressions with their settled rewards, the
decisions' features and candidates), the arms a target chooses among, and the
rewards before the window that train a ``--params log`` target.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy
from sqlalchemy.engine import Engine

from app.config import Experiment
from bandits import rescale
from bandits.ope import replay

# The top-slot outcome of each decision ``d`` (as the impression_rewards view has it: the
# impression at position 0 and its reward that is not late), for the queries that take the
# newest decisions first. A LATERAL subquery that OFFSET 0 keeps from being flattened into
# the join: index probes into the decision's own day partition (log_day), whatever the
# planner's statistics say, so the cost is the sample's, not the log's. (Flattened, a freshly
# loaded log whose statistics described another drew a nested loop of every impression
# against every decision: 10 s for 10,000 rows; with statistics, 1.6x slower than this at
# 1,000,000 impressions.) Columns: i.arm, i.propensity, i.propensity_estimated, i.reward,
# i.config_version.
SETTLED_TOP_SLOT = """
    CROSS JOIN LATERAL (
        SELECT i.arm, i.propensity, i.propensity_estimated, r.reward, i.config_version
        FROM impressions i
        JOIN rewards r ON r.decision_id = i.decision_id AND r.arm = i.arm
          AND r.log_day = i.log_day AND r.kind <> 'late'
        WHERE i.decision_id = d.decision_id AND i.log_day = d.log_day AND i.position = 0
        OFFSET 0
    ) i
"""

WINDOW_SQL = sqlalchemy.text("""
    SELECT d.features, d.candidates, i.arm, i.propensity, i.propensity_estimated, i.reward,
           i.config_version
    FROM impression_rewards i
    JOIN decisions d ON d.decision_id = i.decision_id
    WHERE i.experiment = :experiment AND d.experiment = :experiment
      AND d.model_id = :model_id AND i.position = 0 AND i.reward_kind IS NOT NULL
      AND d.decided_at >= :since AND (CAST(:until AS timestamptz) IS NULL OR d.decided_at < :until)
    ORDER BY d.decided_at, d.decision_id
""")

HISTORY_SQL = sqlalchemy.text("""
    SELECT d.features, r.arm, r.reward
    FROM rewards r
    JOIN decisions d ON d.decision_id = r.decision_id
    WHERE r.experiment = :experiment AND d.experiment = :experiment
      AND r.kind <> 'late' AND d.model_id = :model_id AND d.decided_at < :since
    ORDER BY r.stream_ms, r.stream_seq
""")

LOGGED_ARMS_SQL = sqlalchemy.text("""
    SELECT DISTINCT i.arm FROM impressions i
    JOIN decisions d ON d.decision_id = i.decision_id
    WHERE i.experiment = :experiment AND d.model_id = :model_id
    ORDER BY i.arm
""")

MEDIAN_SQL = sqlalchemy.text("""
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY decided_at)
    FROM decisions WHERE experiment = :experiment AND model_id = :model_id
""")


@dataclass(frozen=True)
class Window:
    """The logged decisions of the evaluation window, slot 0."""

    features: np.ndarray
    arms: list[str]
    propensities: np.ndarray
    estimated: np.ndarray
    rewards: np.ndarray
    config_versions: list[str]
    candidates: list[list[str] | None]  # per decision, as its request named them (None: all)


def median_decision_time(engine: Engine, experiment: Experiment) -> datetime | None:
    """When the median decision of the experiment's current model was made; None if none was."""
    with engine.connect() as conn:
        return conn.execute(
            MEDIAN_SQL, {"experiment": experiment.name, "model_id": experiment.model_id}
        ).scalar()


def window_rows(
    engine: Engine, sql, experiment: Experiment, since: datetime, until: datetime | None
) -> list:
    """The rows ``sql`` selects for the experiment's current model in ``[since, until)``."""
    params = {
        "experiment": experiment.name,
        "model_id": experiment.model_id,
        "since": since,
        "until": until,
    }
    with engine.connect() as conn:
        return conn.execute(sql, params).all()


def read_window(
    engine: Engine, experiment: Experiment, since: datetime, until: datetime | None
) -> Window:
    """Slot-0 impressions with settled rewards of decisions in ``[since, until)``."""
    rows = window_rows(engine, WINDOW_SQL, experiment, since, until)
    dim = experiment.features.dim
    return Window(
        features=np.array([r.features for r in rows], dtype=np.float64).reshape(len(rows), dim),
        arms=[r.arm for r in rows],
        propensities=np.array([r.propensity for r in rows], dtype=np.float64),
        estimated=np.array([r.propensity_estimated for r in rows], dtype=bool),
        rewards=np.array([r.reward for r in rows], dtype=np.float64),
        config_versions=sorted({r.config_version for r in rows}),
        candidates=[r.candidates for r in rows],
    )


def target_arms(engine: Engine, experiment: Experiment) -> list[str]:
    """The arms the target chooses among: the configured ones, or for a dynamic
    catalogue every arm the experiment's model has shown."""
    if experiment.arms:
        return list(experiment.arms)
    with engine.connect() as conn:
        params = {"experiment": experiment.name, "model_id": experiment.model_id}
        return [r.arm for r in conn.execute(LOGGED_ARMS_SQL, params)]


def parameters_from_log(engine: Engine, experiment: Experiment, arms: list[str], since: datetime):
    """The target's ``arms`` learned from every reward of decisions before ``since``.

    Returns the state and the number of rewards replayed.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            HISTORY_SQL,
            {"experiment": experiment.name, "model_id": experiment.model_id, "since": since},
        ).all()
    index = {arm: i for i, arm in enumerate(arms)}
    rows = [r for r in rows if r.arm in index]  # arms no longer configured are not the target's
    rule = experiment.reward
    state = replay(
        np.array([r.features for r in rows], dtype=np.float64).reshape(
            len(rows), experiment.features.dim
        ),
        np.array([index[r.arm] for r in rows], dtype=np.intp),
        np.array([r.reward for r in rows], dtype=np.float64),
        len(arms),
        ridge=experiment.ridge,
        successes=np.array([rescale(r.reward, rule.min, rule.max) for r in rows]),
    )
    return state, len(rows)
