"""The what-if panel: what a proposed ``policy``, ``alpha``, ``epsilon``, ``v``, ``gamma_scale``
or ``gamma_exponent`` would earn.

The code of ``banditd evaluate`` (:mod:`app.evaluate`: the target built from
the config with overrides, IPS, SNIPS and doubly robust with their intervals
and effective sample size), on a bounded sample: the experiment's newest
``sample`` top-slot impressions whose reward is final, under the current
model. The target's parameters are the live model's, frozen now
(``banditd evaluate --params live``): they have learned from the sample's own
rewards, so both estimates lean optimistic; the current settings are scored
the same way on the same sample, and it is the difference between the two
that the page puts first. The page never writes the config: it shows the
TOML lines to put there.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np
from sqlalchemy.engine import Connection

from app.config import ConfigError, Experiment
from app.evaluate import estimate, item_model, parameters_live, target_experiment
from app.evaluation_log import SETTLED_TOP_SLOT, Window
from app.item_models.evaluation import estimate_items, read_item_sample
from app.settings import Settings

PROPOSABLE = ("policy", "alpha", "epsilon", "v", "gamma_scale", "gamma_exponent")
DEFAULT_SAMPLE = 3000
MAX_SAMPLE = 20000
LEVEL = 0.95
SEED = 0
# lin_ts target probabilities are Monte Carlo (about 0.1 us a normal draw here): at most
# MC_DRAWS draws a decision and MC_WORK draws an answer, so that a what-if holds its web
# process (the scoring is CPU) for a fraction of a second. beta_ts uses the quadrature
# (its probabilities do not depend on the context: once per distinct candidate set) while
# that costs at most QUADRATURE_WORK Beta CDF values (K^2 x 4,000 per set of K: 0.1-0.5 us
# each here, so 100 varied candidates cost seconds a set), else Monte Carlo as lin_ts.
MC_DRAWS = 200
MC_WORK = 1_000_000
QUADRATURE_WORK = 2_000_000
QUADRATURE_POINTS = 4000  # bandits.targets.beta_top_probabilities' default
MIN_SAMPLE = 20  # what a what-if over many arms keeps at least, past the budget

# What banditd evaluate reads (app/evaluation_log.py), newest first from decisions'
# (experiment, decided_at) index, each decision's outcome by index probes (SETTLED_TOP_SLOT).
# The features as text ("1,20,0,0,1"), parsed by numpy in one call, and the rows as the
# driver's tuples: several times cheaper than float8[] lists in SQLAlchemy rows.
SAMPLE = (
    """
    SELECT array_to_string(d.features, ',') AS features, d.candidates, i.arm, i.propensity,
           i.propensity_estimated, i.reward, i.config_version
    FROM decisions d
"""
    + SETTLED_TOP_SLOT
    + """
    WHERE d.experiment = %(experiment)s AND d.model_id = %(model_id)s
    ORDER BY d.decided_at DESC
    LIMIT %(limit)s
"""
)


def read_sample(conn: Connection, experiment: Experiment, size: int) -> Window:
    """The newest ``size`` settled top-slot impressions of the experiment's current model."""
    params = {"experiment": experiment.name, "model_id": experiment.model_id, "limit": size}
    cursor = conn.connection.cursor()
    try:
        cursor.execute(SAMPLE, params)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    dim = experiment.features.dim
    if not rows:
        features, candidates, arms, propensities, estimated, rewards, versions = [()] * 7
    else:
        features, candidates, arms, propensities, estimated, rewards, versions = zip(*rows)
    return Window(
        features=np.fromstring(",".join(features), dtype=np.float64, sep=",").reshape(
            len(rows), dim
        ),
        arms=list(arms),
        propensities=np.array(propensities, dtype=np.float64),
        estimated=np.array(estimated, dtype=bool),
        rewards=np.array(rewards, dtype=np.float64),
        config_versions=sorted(set(versions)),
        candidates=list(candidates),
    )


def proposal(experiment: Experiment, changes: Mapping[str, str]) -> Experiment:
    """The experiment with the proposed ``changes``; raises ConfigError as the config file would,
    in a query parameter's words (``alpha must be ...``, not the config file's path to it)."""
    for key, raw in changes.items():
        if key == "policy":
            continue
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {raw!r}")
    try:
        return target_experiment(experiment, [f"{k}={v}" for k, v in changes.items()])
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(f"experiments.{experiment.name}.", "")) from None


def toml_lines(experiment: Experiment, target: Experiment) -> list[str]:
    """The lines to put in the experiment's table of the config file to deploy ``target``."""
    lines = [f"[experiments.{experiment.name}]"]
    old, new = _settings_of(experiment), _settings_of(target)
    for key in PROPOSABLE:
        if new[key] != old[key]:
            lines.append(f"{key} = {json.dumps(new[key])}")
    return lines


def what_if(
    conn: Connection,
    settings: Settings,
    experiment: Experiment,
    target: Experiment,
    sample: int,
) -> dict[str, Any]:
    """Off-policy estimates of the current settings and of ``target`` on the same sample."""
    limit = affordable_sample((experiment, target), sample)
    if experiment.item_model:
        window = read_item_sample(conn, experiment, limit)
    else:
        window = read_sample(conn, experiment, limit)
    answer: dict[str, Any] = {
        "experiment": experiment.name,
        "sample": len(window.arms),
        "sample_limit": limit,
        "level": LEVEL,
        "params": "live",
        "current": _settings_of(experiment),
        "proposed": _settings_of(target),
        "toml": toml_lines(experiment, target),
    }
    if not len(window.arms):
        return answer | {"logged": None, "estimates": None, "warnings": ["no settled decisions"]}
    quadrature = True  # beta_ts' probabilities by quadrature, unless that costs too much
    if experiment.item_model:  # one model (tuning keeps it), scoring each decision's candidates
        model = item_model(settings, None, target, "live", None)
        learned = model.learned
        current, _ = estimate_items(window, experiment, model, **_options(experiment))
        proposed, weights = estimate_items(window, target, model, **_options(target))
    else:
        arms = list(target.arms) or sorted(set(window.arms))
        quadrature = _quadrature_affordable(window, len(arms))
        kept = _within_work(window, (experiment, target), len(arms), quadrature)
        if len(kept.arms) < len(window.arms):  # cut to the budget of Monte Carlo draws
            window, limit = kept, len(kept.arms)
            answer |= {"sample": limit, "sample_limit": limit}
        state, learned = parameters_live(settings, target, arms)
        base_arms = list(experiment.arms) or arms
        base_state, _ = parameters_live(settings, experiment, base_arms)
        current, _ = estimate(
            window, scored(experiment), base_arms, base_state, **_options(experiment, quadrature)
        )
        proposed, weights = estimate(
            window, scored(target), arms, state, **_options(target, quadrature)
        )
    rewards = window.rewards
    se = float(rewards.std(ddof=1) / np.sqrt(rewards.size)) if rewards.size > 1 else None
    return answer | {
        "logged": {"mean": float(rewards.mean()), "se": se},
        "estimates": {"current": current, "proposed": proposed},
        "mean_weight": weights["mean"],
        "learned": learned,
        "warnings": _warnings(proposed, weights, learned)
        + _sampling_notes((experiment, target), sample, limit, quadrature),
    }


def scored(experiment: Experiment) -> Experiment:
    """The experiment as the what-if scores it: a sampling policy with at most MC_DRAWS
    draws."""
    if experiment.policy in SAMPLING and experiment.params.draws > MC_DRAWS:
        return target_experiment(experiment, [f"propensity_draws={MC_DRAWS}"])
    return experiment


SAMPLING = ("lin_ts", "beta_ts")


def _quadrature_affordable(window: Window, n_arms: int) -> bool:
    """Whether beta_ts' quadrature over the window's distinct candidate sets fits the budget."""
    sizes = {tuple(c) if c else None: len(c) if c else n_arms for c in window.candidates}
    return sum(k * k for k in sizes.values()) * QUADRATURE_POINTS <= QUADRATURE_WORK


def _monte_carlo(experiment: Experiment, quadrature: bool) -> bool:
    """Whether the what-if scores ``experiment``'s choice probabilities by Monte Carlo."""
    if experiment.policy == "lin_ts":
        return not experiment.item_model
    return experiment.policy == "beta_ts" and not quadrature


def _within_work(
    window: Window, experiments: tuple[Experiment, ...], n_arms: int, quadrature: bool
) -> Window:
    """The newest decisions of ``window`` whose Monte Carlo draws (``MC_DRAWS`` over every
    arm, per decision) fit MC_WORK; at least MIN_SAMPLE. All of it if nothing is Monte Carlo."""
    if not any(_monte_carlo(e, quadrature) for e in experiments):
        return window
    keep = max(MIN_SAMPLE, MC_WORK // (MC_DRAWS * max(n_arms, 1)))
    if keep >= len(window.arms):
        return window
    return Window(
        features=window.features[:keep],
        arms=window.arms[:keep],
        propensities=window.propensities[:keep],
        estimated=window.estimated[:keep],
        rewards=window.rewards[:keep],
        config_versions=window.config_versions,
        candidates=window.candidates[:keep],
    )


def affordable_sample(experiments: tuple[Experiment, ...], sample: int) -> int:
    """``sample`` cut so that no ``lin_ts`` among ``experiments`` draws more than MC_WORK."""
    for e in experiments:
        if e.policy == "lin_ts" and not e.item_model:
            per_decision = min(e.params.draws, MC_DRAWS) * max(len(e.arms), 1)
            sample = min(sample, max(100, MC_WORK // per_decision))
    return sample


def _options(experiment: Experiment, quadrature: bool = True) -> dict[str, Any]:
    # an item model's lin_ts by quadrature: Monte Carlo over hundreds of candidates costs more
    exact = (experiment.policy == "beta_ts" and quadrature) or (
        experiment.item_model and experiment.policy == "lin_ts"
    )
    return {"level": LEVEL, "seed": SEED, "exact": exact}


def _sampling_notes(
    experiments: tuple[Experiment, ...], asked: int, limit: int, quadrature: bool = True
) -> list[str]:
    sampled = sorted({e.policy for e in experiments if _monte_carlo(e, quadrature)})
    if not sampled:
        return []
    note = (
        f"{' and '.join(sampled)}'s choice probabilities are Monte Carlo estimates "
        f"({MC_DRAWS} draws a decision)"
    )
    if limit < asked:
        note += f", so the estimate uses the newest {limit:,} decisions to answer quickly"
    return [note]


def _settings_of(experiment: Experiment) -> dict[str, Any]:
    # squarecb's knobs are in the settings only where set or used: else their defaults
    params = experiment.params
    return {key: experiment.settings.get(key, getattr(params, key, None)) for key in PROPOSABLE}


def _warnings(
    estimates: list[dict[str, Any]], weights: dict[str, float], learned: int
) -> list[str]:
    found = []
    if not learned:
        found.append(
            "the live model of these settings has learned from no reward yet, so every arm ties "
            "and the settings differ only by chance"
        )
    ess = min(e["ess"] for e in estimates)
    if ess < 100:
        found.append(f"effective sample size {ess:.0f} < 100: the intervals may be too narrow")
    mean_w, se_w = weights["mean"], weights["se"]
    if np.isfinite(se_w) and abs(mean_w - 1.0) > 3 * se_w + 0.01:
        found.append(
            f"mean importance weight {mean_w:.3f}, not 1: the proposal favours arms the log "
            "rarely shows there, so IPS and DR lean low; trust SNIPS more"
        )
    return found


__all__ = ["ConfigError", "DEFAULT_SAMPLE", "MAX_SAMPLE", "PROPOSABLE", "proposal", "what_if"]
