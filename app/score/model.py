"""An experiment's model as arrays: live from Redis, from a Postgres snapshot, or replayed.

Each loader returns a :class:`LoadedModel`: one stacked
:class:`~bandits.state.LearningState` over the arms asked for (in that
order; an arm that never learned has the prior, as in ``/choose``) and the
stream position it includes every reward up to. :func:`estimator` puts it
into the estimator of the experiment's policy (bandits/estimators.py).

>>> from app.config import load_config  # doctest: +SKIP
>>> exp = load_config("examples/experiments.toml").get("home_feed")  # doctest: +SKIP
>>> model = estimator(exp, live_model(redis.Redis(), exp))  # doctest: +SKIP
>>> model.choose(exp.features.encode({"hour": 9}), k=2)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import redis
from sqlalchemy.engine import Engine

from app.config import AUTO_FORGETTING, DISJOINT, ConfigError, Experiment, parse_config
from app.live_model import Position, read_live
from app.rebuild import replay
from app.services import redis_client
from app.snapshots import latest_snapshot
from bandits import LearningState, arm_prior
from bandits.estimators import BanditEstimator, estimator_for


class ModelUnavailable(ValueError):
    """The model cannot be loaded as asked (e.g. no snapshot yet); the message says why."""


@dataclass
class LoadedModel:
    """An experiment's arms as one state, and the stream position it includes rewards up to."""

    arms: tuple[str, ...]
    state: LearningState
    position: Position | None  # None: nothing learned yet (every arm at its prior)
    source: str  # "live", "snapshot" or "replay"


def live_model(
    client: redis.Redis, exp: Experiment, arms: Sequence[str] | None = None
) -> LoadedModel:
    """The parameters ``/choose`` scores with now, read in one Redis transaction."""
    arms = _arms(exp, arms)
    live = read_live(client, exp.name, [exp.model_id])
    states = {key: a.state for key, a in live.arms.items()}
    return _loaded(exp, arms, states, live.watermark, "live")


def snapshot_model(
    engine: Engine,
    exp: Experiment,
    arms: Sequence[str] | None = None,
    upto: Position | None = None,
) -> LoadedModel:
    """The latest snapshot the worker copied to Postgres (at or before ``upto``)."""
    arms = _arms(exp, arms)
    snap = latest_snapshot(engine, exp.name, upto)
    if snap is None:
        raise ModelUnavailable(f"{exp.name} has no model snapshot in Postgres yet")
    return _loaded(exp, arms, snap.arms, snap.position, "snapshot")


def replayed_model(
    engine: Engine,
    exp: Experiment,
    arms: Sequence[str] | None = None,
    upto: Position | None = None,
) -> LoadedModel:
    """The model the log's rewards up to ``upto`` (default: all) teach, as a rebuild computes it."""
    arms = _arms(exp, arms)
    result = replay(engine, exp.name, upto)
    return _loaded(exp, arms, result.arms, result.last, "replay")


def estimator(
    exp: Experiment, model: LoadedModel, random_state: int | np.random.Generator | None = None
) -> BanditEstimator:
    """The estimator of ``exp``'s policy and knobs holding ``model``'s state.

    With ``forgetting = "auto"`` its :meth:`~bandits.estimators.BanditEstimator.partial_fit`
    forgets nothing (the worker's automatic forgetting is not an estimator's).
    """
    # forgetting = "auto" is the worker's (per arm, from its recent rewards): the estimator
    # chooses with what it learned, and its own partial_fit forgets nothing
    forgetting = 1.0 if exp.forgetting == AUTO_FORGETTING else exp.forgetting
    fitted = estimator_for(
        exp.policy,
        len(model.arms),
        exp.params,
        ridge=exp.ridge,
        forgetting=forgetting,
        random_state=random_state,
    )
    fitted.state = model.state
    fitted.features = exp.features
    fitted.arm_ids = tuple(model.arms)
    return fitted


def from_service(
    url: str,
    api_key: str,
    experiment: str,
    *,
    redis_url: str,
    random_state: int | np.random.Generator | None = None,
) -> BanditEstimator:
    """The live model of ``experiment`` as its estimator, configured as the service serves it.

    The experiment's settings come from the service's ``GET /experiments``
    (checked against its config version), the parameters from its Redis
    (``redis_url``): the API serves no parameters. ``features`` and
    ``arm_ids`` of the estimator encode contexts and name its arms.
    """
    from app.client import BanditClient

    with BanditClient(url, api_key) as client:
        listed = {e["name"]: e for e in client.experiments()}
    entry = listed.get(experiment)
    if entry is None:
        raise ModelUnavailable(f"the service at {url} has no experiment named {experiment!r}")
    table = {k: v for k, v in entry.items() if k not in ("name", "config_version", "model_id")}
    try:
        exp = parse_config({"experiments": {experiment: table}}).get(experiment)
    except ConfigError as exc:
        raise ModelUnavailable(f"{experiment}: its settings cannot be read back: {exc}") from exc
    if (exp.version, exp.model_id) != (entry["config_version"], entry["model_id"]):
        raise ModelUnavailable(f"{experiment}: its settings do not give the served version")
    client = redis_client(redis_url)
    try:
        return estimator(exp, live_model(client, exp), random_state)
    finally:
        client.close()


def _arms(exp: Experiment, arms: Sequence[str] | None) -> tuple[str, ...]:
    if exp.segment_by is not None and exp.segment is None:
        raise ModelUnavailable(
            f"{exp.name} has a model per {exp.segment_by!r}: load one segment's, "
            f"exp.for_segment(value)"
        )
    return arm_names(exp, arms)


def arm_names(exp: Experiment, arms: Sequence[str] | None = None) -> tuple[str, ...]:
    """The arms a model of ``exp`` is loaded for: ``arms``, else the configured ones."""
    if exp.model != DISJOINT:
        raise ModelUnavailable(
            f"{exp.name} scores items by their features (model = {exp.model!r}); "
            "only per-arm models can be loaded here"
        )
    if arms is None:
        if exp.dynamic:
            raise ModelUnavailable(f"{exp.name} has a dynamic catalogue: name the candidate arms")
        return exp.arms
    return tuple(arms)


def _loaded(
    exp: Experiment,
    arms: tuple[str, ...],
    states: Mapping[tuple[str, str], LearningState],
    position: Position | None,
    source: str,
) -> LoadedModel:
    """``arms`` of ``exp``'s model among ``(model_id, arm)``-keyed states (the prior if absent)."""
    found = {arm: s for (model, arm), s in states.items() if model == exp.model_id}
    return LoadedModel(arms, _stack(exp, arms, found), position, source)


def _stack(exp: Experiment, arms: Sequence[str], found: Mapping[str, LearningState]):
    dim = exp.features.dim
    parts = [found.get(arm) or arm_prior(dim, exp.ridge) for arm in arms]
    return LearningState(
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in FIELDS}
    )


FIELDS = ("A_inv", "theta", "n", "successes", "failures", "A", "b")
