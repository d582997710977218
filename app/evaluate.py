"""``banditd evaluate``: what another config would have earned, from the Postgres log.

Reads one experiment's logged decisions in a window (:mod:`app.evaluation_log`:
their encoded features and candidates, the arm shown in slot 0 with its logged
propensity, and its settled reward from the ``impression_rewards`` view),
builds the target policy (the experiment's config with ``--set`` overrides)
and estimates its mean reward per decision
with :mod:`bandits.ope`: IPS, self-normalised IPS and doubly robust, with
confidence intervals and the effective sample size.

The target's model parameters (``--params``):

- ``log`` (default): rebuilt by replaying, in learning order, the rewards of
  the decisions made *before* the window. The target is then a frozen policy
  deployed at the window's start; none of the window's rewards informs it, so
  the estimators are unbiased for it. It does not learn during the window, so
  for a long window it understates what a learning policy would earn.
- ``live``: the current parameters from Redis, frozen. They have learned from
  the window's own rewards, so the estimate is optimistic (the policy is
  scored on outcomes it was fitted to), the more so the shorter the history
  before the window.

For a model over item features (``model = "shared"`` or ``"hybrid"``) the
target scores each decision's logged candidates by their item features
(:mod:`app.item_models.evaluation`); ``log`` then replays the log up to the
window's start as a rebuild does.

Without ``--since`` the window starts at the median decision time of the
experiment's current model, so half the log trains and half evaluates.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from app.cli_args import number, whole
from app.config import ConfigError, Experiment, load_config, parse_config
from app.evaluation_log import (
    Window,
    median_decision_time,
    parameters_from_log,
    read_window,
    target_arms,
)
from app.item_models.evaluation import (
    ItemModel,
    estimate_items,
    model_from_arms,
    read_item_window,
)
from app.settings import Settings
from bandits import ScoringState, prior
from bandits.ope import (
    BanditLog,
    evaluate,
    importance_weights,
    ridge_predictions,
    target_probabilities,
)

OVERRIDABLE = {
    "policy",
    "alpha",
    "epsilon",
    "v",
    "propensity_draws",
    "gamma_scale",
    "gamma_exponent",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``banditd evaluate``'s options on ``parser``."""
    parser.add_argument("--experiment", required=True, help="experiment name in the config")
    parser.add_argument(
        "--segment", help="with segment_by: the segment (its value) whose model and log to use"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override for the target policy; keys: {', '.join(sorted(OVERRIDABLE))}",
    )
    parser.add_argument("--since", help="window start (ISO 8601); default: the median decision")
    parser.add_argument("--until", help="window end (ISO 8601, exclusive); default: now")
    parser.add_argument(
        "--params",
        choices=("log", "live"),
        default="log",
        help="target parameters: rebuilt from the log before the window, or live from Redis",
    )
    parser.add_argument(
        "--level",
        type=number(0, 1, open_low=True, open_high=True),
        default=0.95,
        help="confidence level, in (0, 1)",
    )
    parser.add_argument(
        "--seed", type=whole(0), default=0, help="seed of Monte Carlo draws and folds"
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="Thompson-sampling target probabilities by quadrature instead of Monte Carlo",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def target_experiment(experiment: Experiment, overrides: list[str]) -> Experiment:
    """``experiment`` with ``KEY=VALUE`` overrides, validated like the config file."""
    table: dict[str, Any] = json.loads(json.dumps(experiment.settings))
    table.pop("item_layout", None)  # derived from the item features, not a config key
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in OVERRIDABLE:
            raise ConfigError(
                f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(OVERRIDABLE)}"
            )
        table[key] = raw.strip() if key == "policy" else _number(key, raw)
    config = parse_config({"experiments": {experiment.name: table}})
    return config.experiments[experiment.name]


def _number(key: str, raw: str) -> float | int:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"--set {key}={raw!r}: not a number") from None
    return int(value) if value.is_integer() and key == "propensity_draws" else value


def window_start(engine: Engine, experiment: Experiment, since: str | None) -> datetime | None:
    """``--since`` parsed, or the median decision time of the experiment's model."""
    if since is not None:
        return _timestamp(since)
    return median_decision_time(engine, experiment)


def _timestamp(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not an ISO 8601 time: {text!r}") from None


def parameters_live(
    settings: Settings, experiment: Experiment, arms: list[str]
) -> tuple[ScoringState, int]:
    """The live parameters of ``arms`` from Redis, frozen now; arms never updated keep the prior."""
    from app.model_store import ModelStore
    from app.services import redis_client

    dim = experiment.features.dim
    state = prior(len(arms), dim, experiment.ridge)
    store = ModelStore(redis_client(settings.redis_url))
    found = store.load_scoring(experiment.name, experiment.model_id, arms, dim)
    for i, arm in enumerate(arms):
        if arm in found:
            p = found[arm]
            state.A_inv[i], state.theta[i] = p.A_inv, p.theta
            state.n[i], state.successes[i], state.failures[i] = p.n, p.successes, p.failures
    return state, int(state.n.sum())


def estimate(
    window: Window,
    target: Experiment,
    arms: list[str],
    state: ScoringState,
    *,
    level: float,
    seed: int,
    exact: bool = False,
) -> tuple[list[dict[str, float | str]], dict[str, float]]:
    """IPS, SNIPS and DR estimates of ``target`` choosing among ``arms`` with ``state``.

    A logged arm that is not one of the target's arms gets target probability
    0 (the target would never show it), which IPS handles without bias. Where
    a decision's request named candidates, the target chooses among those of
    them that are its arms, as the logging policy did.
    Also returns the mean importance weight and its standard error, which
    should be 1 within noise (see :func:`bandits.ope.importance_weights`).
    """
    k = len(arms)
    index = {arm: i for i, arm in enumerate(arms)}
    arms = np.array([index.get(a, k) for a in window.arms], dtype=np.intp)  # k: not the target's
    rng = np.random.default_rng(seed)
    probs = target_probabilities(
        target.policy,
        state,
        window.features,
        target.params,
        rng,
        exact=exact,
        candidates=candidate_mask(window.candidates, index),
    )
    probs = np.hstack([probs, np.zeros((probs.shape[0], 1))])
    log = BanditLog(window.features, arms, window.propensities, window.rewards)
    predicted = ridge_predictions(log, k + 1, ridge=target.ridge, rng=rng)
    w = importance_weights(log, probs)
    weights = {"mean": float(w.mean()), "se": _se(w)}
    return [vars(e) for e in evaluate(log, probs, predicted, level=level)], weights


def candidate_mask(candidates: list[list[str] | None], index: dict[str, int]) -> np.ndarray:
    """``(n, K)`` bool: which of the target's ``K`` arms each decision could show."""
    mask = np.ones((len(candidates), len(index)), dtype=bool)
    for row, named in enumerate(candidates):
        if named is not None:
            mask[row] = False
            mask[row, [index[a] for a in named if a in index]] = True
    return mask


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``banditd evaluate``; returns the process exit code."""
    from app.services import database_engine

    try:
        config = load_config(settings.config_path)
        experiment = config.get(args.experiment)
        if experiment is None:
            raise ConfigError(f"no experiment named {args.experiment!r} in {settings.config_path}")
        target = target_experiment(experiment, args.set)
        if experiment.segment_by is not None:
            if not args.segment:
                raise ConfigError(
                    f"{experiment.name} has a model per {experiment.segment_by}: "
                    "give --segment VALUE"
                )
            experiment = experiment.for_segment(args.segment)
            target = target.for_segment(args.segment)
        elif args.segment:
            raise ConfigError(f"{experiment.name} has no segment_by: --segment does not apply")
        engine = database_engine(settings.database_url)
        since = window_start(engine, experiment, args.since)
        until = _timestamp(args.until) if args.until else None
        if since is not None and until is not None and until <= since:
            raise ConfigError(f"--until {until} is not after --since {since}")
    except ConfigError as exc:
        print(f"banditd evaluate: {exc}", file=sys.stderr)
        return 2
    if since is None:
        where = experiment.name
        if experiment.segment is not None:
            where += (
                f" in segment {experiment.segment!r} (no decision had "
                f"{experiment.segment_by} = {experiment.segment!r})"
            )
        print(f"banditd evaluate: no decisions logged for {where}", file=sys.stderr)
        return 1
    if experiment.item_model:
        window = read_item_window(engine, experiment, since, until)
    else:
        window = read_window(engine, experiment, since, until)
    if not len(window.arms):
        engine.dispose()
        print(f"banditd evaluate: no settled decisions in the window from {since}", file=sys.stderr)
        return 1
    if experiment.item_model:
        model = item_model(settings, engine, target, args.params, since)
        engine.dispose()
        arms = ["(each decision's candidates, by their item features)"]
        learned = model.learned
        estimates, weights = estimate_items(
            window, target, model, level=args.level, seed=args.seed, exact=args.exact
        )
    else:
        arms = target_arms(engine, target)
        if args.params == "live":
            state, learned = parameters_live(settings, target, arms)
        else:
            state, learned = parameters_from_log(engine, target, arms, since)
        engine.dispose()
        estimates, weights = estimate(
            window, target, arms, state, level=args.level, seed=args.seed, exact=args.exact
        )
    report = {
        "experiment": experiment.name,
        "segment": experiment.segment,
        "model_id": experiment.model_id,
        "since": since.isoformat(),
        "until": until.isoformat() if until else None,
        "decisions": len(window.arms),
        "logged_config_versions": window.config_versions,
        "logged_mean_reward": float(window.rewards.mean()),
        "logged_mean_reward_se": _se(window.rewards),
        "propensities_estimated": float(window.estimated.mean()),
        "target": {
            "policy": target.policy,
            "alpha": target.params.alpha,
            "epsilon": target.params.epsilon,
            "v": target.params.v,
            "propensity_draws": target.params.draws,
            "gamma_scale": target.params.gamma_scale,
            "gamma_exponent": target.params.gamma_exponent,
        },
        "params": args.params,
        "params_rewards": learned,
        "level": args.level,
        "arms": arms,
        "mean_weight": weights["mean"],
        "mean_weight_se": weights["se"],
        "estimates": estimates,
    }
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def item_model(
    settings: Settings,
    engine: Engine | None,
    target: Experiment,
    params: str,
    since: datetime | None,
) -> ItemModel:
    """The item model a target scores with: replayed up to ``since``, or the live one."""
    if params == "live":
        from app.live_model import read_live
        from app.services import redis_client

        live = read_live(redis_client(settings.redis_url), target.name, [target.model_id])
        arms = {key: arm.state for key, arm in live.arms.items()}
        extras = {key: arm.extra for key, arm in live.arms.items() if arm.extra is not None}
        return model_from_arms(target, arms, extras)
    from app.rebuild import replay

    replayed = replay(engine, target.name, (int(since.timestamp() * 1000), 0))
    return model_from_arms(target, replayed.arms, replayed.extras)


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")


def render(report: dict[str, Any]) -> str:
    """The report as text for a terminal."""
    t = report["target"]
    source = (
        f"rebuilt from {report['params_rewards']:,} rewards logged before the window"
        if report["params"] == "log"
        else "live from Redis, frozen now (optimistic: they learned from this window)"
    )
    lines = [
        f"experiment {report['experiment']} (model {report['model_id']}): "
        f"{report['decisions']:,} settled decisions from {report['since']}"
        + (f" to {report['until']}" if report["until"] else ""),
        f"logged: mean reward {report['logged_mean_reward']:.4f} "
        f"± {report['logged_mean_reward_se']:.4f} (se), "
        f"config versions {', '.join(report['logged_config_versions'])}",
        f"target: policy={t['policy']} alpha={t['alpha']:g} epsilon={t['epsilon']:g} "
        f"v={t['v']:g} propensity_draws={t['propensity_draws']}"
        + (
            f" gamma_scale={t['gamma_scale']:g} gamma_exponent={t['gamma_exponent']:g}"
            if t["policy"] == "squarecb"
            else ""
        ),
        f"target parameters: {source}",
        "",
        f"{'estimator':<10} {'value':>8}   {int(report['level'] * 100)}% interval"
        f"{'':>10} {'ESS':>9}",
    ]
    for e in report["estimates"]:
        lines.append(
            f"{e['estimator']:<10} {e['value']:>8.4f}   [{e['low']:.4f}, {e['high']:.4f}]"
            f"{'':>6} {e['ess']:>9.1f}"
        )
    ess = min(e["ess"] for e in report["estimates"])
    if ess < 100:
        lines.append(f"warning: effective sample size {ess:.0f} < 100; intervals may undercover")
    mean_w, se_w = report["mean_weight"], report["mean_weight_se"]
    if abs(mean_w - 1.0) > 3 * se_w + 0.01:
        lines.append(
            f"warning: mean importance weight {mean_w:.3f} ± {se_w:.3f}, not 1: the target puts "
            "probability on arms the log (almost) never shows there, so IPS and DR are biased "
            "(down if below 1); SNIPS only rescales. An epsilon floor in the logging config helps"
        )
    if report["propensities_estimated"] > 0:
        lines.append(
            f"note: {report['propensities_estimated']:.0%} of logged propensities are Monte Carlo "
            "estimates (Thompson sampling); see docs/LEARNING.md for their error"
        )
    return "\n".join(lines)
