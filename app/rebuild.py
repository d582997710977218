"""Recompute an experiment's arm parameters from the Postgres log.

The log is the source of truth: replaying its explicit and default rewards
(never late ones) in the order the worker learned them, the stream entry id
``(stream_ms, stream_seq)``, with the same update code the worker runs
(``bandits.update`` and ``bandits.rescale``), from the same starting point,
gives the live parameters bit for bit. Each reward takes its features and
model from its decision, and the ridge and reward range from the decision's
config version. The replay starts from the latest snapshot at or before the
point of interest (:mod:`app.snapshots`) and applies only the rewards after it.

:func:`verify` compares the replay with the live model at the live watermark;
:func:`rebuild` writes the replay over the live model.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Callable, Iterator

import numpy as np
import redis
import sqlalchemy
from sqlalchemy.engine import Engine

from app import keys
from app.lease import LeaseLost, Leases
from app.config import HYBRID, SHARED_ARM, slot_weight
from app.events import RewardEvent
from app.item_models.records import level_column, shared_vector
from app.learner import FIELDS, learn_hybrid_reward, learn_reward
from app.live_model import LiveModel, Position, entry_id, read_live, scan_model_ids
from app.model_store import ArmUpdate, ModelStore
from app.retention.keeper import replay_base
from app.snapshots import END, latest_snapshot
from bandits import LearningState, arm_prior
from bandits.learning import UnlearnableReward
from bandits.item_models import HybridState

REWARDS = """
SELECT r.stream_ms, r.stream_seq, r.decision_id, r.arm, r.reward, d.model_id, d.features,
       (c.settings->>'ridge')::float8 AS ridge,
       (c.settings->'reward'->>'min')::float8 AS reward_min,
       (c.settings->'reward'->>'max')::float8 AS reward_max,
       CASE WHEN c.settings->>'forgetting' = 'auto' THEN 0.0  -- app.config.AUTO_FORGETTING
            ELSE coalesce((c.settings->>'forgetting')::float8, 1.0) END AS forgetting,
       c.settings->'position_weights' AS position_weights,
       i.position, i.item_vector, c.settings->'item_layout' AS item_layout
FROM rewards r
LEFT JOIN decisions d ON d.decision_id = r.decision_id AND d.log_day = r.log_day
LEFT JOIN impressions i ON i.decision_id = r.decision_id AND i.arm = r.arm AND i.log_day = r.log_day
LEFT JOIN config_versions c
       ON c.experiment = d.experiment AND c.config_version = d.config_version
WHERE r.experiment = :experiment AND r.kind IN ('explicit', 'default')
  AND (r.stream_ms, r.stream_seq) > (:after_ms, :after_seq)
  AND (r.stream_ms, r.stream_seq) <= (:upto_ms, :upto_seq)
ORDER BY r.stream_ms, r.stream_seq
"""
CHUNK = 5000
LEASE_MS = 30_000


class RebuildError(RuntimeError):
    """The log cannot be replayed, or the live model cannot be replaced; the message says why."""


@dataclass
class Replay:
    """Arm states recomputed from the log up to a position."""

    arms: dict[tuple[str, str], LearningState]  # (model_id, arm) -> one-arm state
    extras: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # hybrid arms' B
    snapshot: Position | None = None  # where the replay started, if from a snapshot
    replayed: int = 0  # rewards applied after the snapshot
    # rewards this release refuses to learn (features too large for the arm's model), skipped:
    # only a log of the previous release, whose worker learned them, holds any
    unlearnable: int = 0
    last: Position | None = None  # position of the last reward included (snapshot's if none)
    kept_since: date | None = None  # the replay starts at retention's base: the log begins here


@dataclass
class ArmCheck:
    """One arm, as recomputed and as live."""

    model_id: str
    arm: str
    n_log: float
    n_live: float
    max_a_inv: float  # max |ΔA_inv|; inf when one side has no such arm
    max_theta: float  # max |Δθ|
    max_other: float  # max |Δ| over A, b, n, successes, failures
    ok: bool


@dataclass
class Verification:
    """The outcome of :func:`verify`."""

    experiment: str
    watermark: Position | None
    replay: Replay
    arms: list[ArmCheck] = field(default_factory=list)
    tolerance: float = 1e-9

    @property
    def ok(self) -> bool:
        """True if every arm matches within the tolerance."""
        return all(a.ok for a in self.arms)

    @property
    def max_difference(self) -> float:
        """The largest difference of any compared quantity of any arm."""
        return max((max(a.max_a_inv, a.max_theta, a.max_other) for a in self.arms), default=0.0)


@dataclass
class Rebuilt:
    """The outcome of :func:`rebuild`."""

    experiment: str
    replay: Replay
    watermark: Position | None
    written: list[tuple[str, str]]
    left_alone: list[tuple[str, str]]  # live arms the log knows nothing about


def replay(
    engine: Engine,
    experiment: str,
    upto: Position | None = None,
    *,
    use_snapshots: bool = True,
    progress: Callable[[], None] | None = None,
) -> Replay:
    """Recompute every arm of ``experiment`` from the log, up to ``upto`` (default: all of it).

    ``progress`` is called every few thousand rewards (a long replay renews its lease there).
    """
    snapshot = latest_snapshot(engine, experiment, upto) if use_snapshots else None
    retained = None if use_snapshots else replay_base(engine, experiment)
    if retained is not None and (upto is None or retained[0] <= upto):
        # the log before this snapshot was dropped by retention: the whole log starts here
        snapshot = latest_snapshot(engine, experiment, retained[0])
    result = Replay(arms={}, snapshot=None if snapshot is None else snapshot.position)
    if retained is not None and snapshot is not None:
        result.kept_since = retained[1]
    if snapshot is not None:
        result.arms = snapshot.arms
        result.extras = snapshot.extras
        result.last = snapshot.position
    after = result.snapshot or (-1, -1)
    until = upto or END
    params = {
        "experiment": experiment,
        "after_ms": after[0],
        "after_seq": after[1],
        "upto_ms": until[0],
        "upto_seq": until[1],
    }
    with engine.connect() as conn:
        rows = conn.execution_options(yield_per=CHUNK).execute(sqlalchemy.text(REWARDS), params)
        for row in rows:
            _apply(result, row)
            if progress is not None and result.replayed % CHUNK == 0:
                progress()
    return result


def _apply(result: Replay, row) -> None:
    if row.model_id is None or row.ridge is None:
        missing = "decision" if row.model_id is None else "config version of the decision"
        raise RebuildError(
            f"reward {row.decision_id}/{row.arm} at {row.stream_ms}-{row.stream_seq} "
            f"cannot be replayed: its {missing} is not in the log"
        )
    x = np.asarray(row.features, dtype=np.float64)
    key, shared_level = (row.model_id, row.arm), None
    if row.item_layout is not None:  # an item model: the shared vector of x and the item shown
        if row.item_vector is None:
            raise RebuildError(
                f"reward {row.decision_id}/{row.arm} at {row.stream_ms}-{row.stream_seq} "
                "cannot be replayed: its impression logged no item features"
            )
        phi = shared_vector(row.item_layout, x, np.asarray(row.item_vector, dtype=np.float64))
        if row.item_layout["m"] == HYBRID:
            _apply_hybrid(result, row, x, phi)
            return
        x, key = phi, (row.model_id, SHARED_ARM)
        shared_level = level_column(row.item_layout)
    state = result.arms.get(key)
    if state is None:
        state = result.arms[key] = arm_prior(len(x), row.ridge)
    # without forgetting, a refused update changes nothing; with it, the discount came first
    touched = [] if row.forgetting == 1.0 else [state]
    with _unless_unlearnable(result, row, touched):
        learn_reward(  # exactly the worker's update
            state,
            x,
            row.reward,
            ridge=row.ridge,
            reward_min=row.reward_min,
            reward_max=row.reward_max,
            weight=slot_weight(row.position_weights or (), row.position or 0),
            forgetting=row.forgetting,
            shared_level=shared_level,
        )


@contextmanager
def _unless_unlearnable(result: Replay, row, touched: list) -> Iterator[None]:
    """Count the reward learned in the block as replayed; or, if this release refuses it
    (features too large for its arm's model, which the worker dead-letters), count it as
    unlearnable and put the ``touched`` states (and arrays) back as they were before it."""
    saved = [_copy(t) for t in touched]
    try:
        yield
    except UnlearnableReward:
        for target, copy in zip(touched, saved):
            _restore(target, copy)
        result.unlearnable += 1
    else:
        result.replayed += 1
    result.last = (row.stream_ms, row.stream_seq)


def _copy(target: LearningState | np.ndarray) -> dict[str, np.ndarray] | np.ndarray:
    if isinstance(target, np.ndarray):
        return target.copy()
    return {name: getattr(target, name).copy() for name in FIELDS}


def _restore(target: LearningState | np.ndarray, copy) -> None:
    if isinstance(target, np.ndarray):
        target[...] = copy
        return
    for name in FIELDS:
        getattr(target, name)[...] = copy[name]


def _apply_hybrid(result: Replay, row, x: np.ndarray, phi: np.ndarray) -> None:
    """One reward of a hybrid model: its shared row and its arm's, as the worker learns it."""
    shared_key, key = (row.model_id, SHARED_ARM), (row.model_id, row.arm)
    if shared_key not in result.arms:
        result.arms[shared_key] = arm_prior(len(phi), row.ridge)
    if key not in result.arms:
        result.arms[key] = arm_prior(len(x), row.ridge)
        result.extras[key] = np.zeros((len(x), len(phi)))
    # one-arm views: the update writes through to the replay's own arrays
    state = HybridState(result.arms[shared_key], result.arms[key], result.extras[key][None])
    touched = [result.arms[shared_key], result.arms[key], result.extras[key]]
    event = RewardEvent(
        decision_id=row.decision_id,
        experiment="",
        arm=row.arm,
        reward=row.reward,
        kind="explicit",
        received_ms=0,
        features=x,
        model_id=row.model_id,
        ridge=row.ridge,
        reward_min=row.reward_min,
        reward_max=row.reward_max,
        weight=slot_weight(row.position_weights or (), row.position or 0),
        forgetting=row.forgetting,
        shared_features=phi,
    )
    with _unless_unlearnable(result, row, touched):  # the shared row is learned first
        learn_hybrid_reward(state, 0, event)


def verify(
    client: redis.Redis,
    engine: Engine,
    experiment: str,
    *,
    tolerance: float = 1e-9,
    use_snapshots: bool = True,
) -> Verification:
    """Compare the live model with the log replayed up to the live watermark.

    The watermark and the arms are read in one Redis transaction, so the worker
    may keep learning meanwhile: what it learns later is past the watermark,
    and the replay stops there.
    """
    _check_known(client, engine, experiment)
    models = scan_model_ids(client, experiment)
    for _ in range(5):
        live = read_live(client, experiment, models)
        if live.watermark is None:
            result = Replay(arms={})
        else:
            result = replay(engine, experiment, live.watermark, use_snapshots=use_snapshots)
        new_models = {model for model, _ in result.arms} - models
        if not new_models:
            break
        # a model first saved after the scan: read the live model again, with it
        models |= new_models
    checks = [
        _compare(key, result.arms.get(key), live.arms.get(key), tolerance, result.extras.get(key))
        for key in sorted(set(result.arms) | set(live.arms))
    ]
    return Verification(experiment, live.watermark, result, checks, tolerance)


def _compare(
    key, log: LearningState | None, live, tolerance: float, extra: np.ndarray | None = None
) -> ArmCheck:
    model_id, arm = key
    if log is None or live is None:
        n_log = 0.0 if log is None else float(log.n[0])
        n_live = 0.0 if live is None else float(live.state.n[0])
        return ArmCheck(model_id, arm, n_log, n_live, np.inf, np.inf, np.inf, False)
    state = live.state
    pairs = {
        "A_inv": (log.A_inv, state.A_inv),
        "theta": (log.theta, state.theta),
        "A": (log.A, state.A),
        "b": (log.b, state.b),
        "n": (log.n, state.n),
        "successes": (log.successes, state.successes),
        "failures": (log.failures, state.failures),
    }
    if extra is not None or live.extra is not None:  # a hybrid arm: its B too
        if extra is None or live.extra is None:
            return ArmCheck(model_id, arm, log.n[0], state.n[0], np.inf, np.inf, np.inf, False)
        pairs["B"] = (extra, live.extra)
    if any(a.shape != b.shape for a, b in pairs.values()):
        return ArmCheck(model_id, arm, log.n[0], state.n[0], np.inf, np.inf, np.inf, False)
    diff = {name: float(np.max(np.abs(a - b), initial=0.0)) for name, (a, b) in pairs.items()}
    ok = all(np.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in pairs.values())
    other = max(v for k, v in diff.items() if k not in ("A_inv", "theta"))
    return ArmCheck(
        model_id, arm, float(log.n[0]), float(state.n[0]), diff["A_inv"], diff["theta"], other, ok
    )


def rebuild(
    client: redis.Redis, engine: Engine, experiment: str, *, use_snapshots: bool = True
) -> Rebuilt:
    """Replace the live parameters of ``experiment`` with the ones replayed from the whole log.

    Holds the experiment's stream lease meanwhile, so no worker learns while
    the parameters are replaced (a worker that gets the lease back reloads them);
    refuses if a worker holds it. Every arm written gets a higher version, so API
    processes refresh their copies. The watermark becomes the later of the live
    one and the last reward replayed: rewards logged but not yet learned are in
    the rebuilt parameters, so the worker must not learn them again.
    """
    _check_known(client, engine, experiment)
    leases = Leases(client, f"rebuild-{socket.gethostname()}-{os.getpid()}", ttl_ms=LEASE_MS)

    def renew() -> None:
        if not leases.hold(experiment):
            owner = client.get(keys.owner(experiment))
            raise RebuildError(
                f"{experiment} is being processed by {owner.decode() if owner else 'a worker'}: "
                "stop its worker(s) and run the rebuild again"
            )

    renew()
    try:
        result = replay(engine, experiment, use_snapshots=use_snapshots, progress=renew)
        models = scan_model_ids(client, experiment) | {model for model, _ in result.arms}
        live = read_live(client, experiment, models)
        updates = [
            ArmUpdate(
                m, a, state, _next_version(live, (m, a), state), extra=result.extras.get((m, a))
            )
            for (m, a), state in sorted(result.arms.items())
        ]
        marks = [p for p in (live.watermark, result.last) if p is not None]
        watermark = max(marks) if marks else None
        if updates:
            renew()
            try:
                ModelStore(client).save(
                    experiment, updates, entry_id(watermark or (0, 0)), holder=leases.holder
                )
            except LeaseLost as exc:
                raise RebuildError(f"lost the lease of {experiment} before writing") from exc
    finally:
        leases.release(experiment)
    return Rebuilt(
        experiment=experiment,
        replay=result,
        watermark=watermark,
        written=[(u.model_id, u.arm) for u in updates],
        left_alone=sorted(set(live.arms) - set(result.arms)),
    )


def _next_version(live: LiveModel, key: tuple[str, str], state: LearningState) -> int:
    # Above both the live version and the learned count (a version is the arm's count
    # of updates until a rebuild bumps it), so that an API process holding any earlier
    # copy sees a new version, even after the live keys were lost.
    current = live.arms[key].version if key in live.arms else 0
    return max(current, int(state.n[0])) + 1


def _check_known(client: redis.Redis, engine: Engine, experiment: str) -> None:
    with engine.connect() as conn:
        logged = conn.execute(
            sqlalchemy.text("SELECT 1 FROM config_versions WHERE experiment = :e LIMIT 1"),
            {"e": experiment},
        ).first()
    if logged is None and client.get(keys.applied(experiment)) is None:
        raise RebuildError(f"unknown experiment {experiment!r}: nothing in the log or in Redis")


def format_verification(v: Verification) -> str:
    """A per-arm table and a verdict, for the terminal."""
    lines = [f"experiment {v.experiment}: {_describe(v.replay, v.watermark, 'live watermark')}"]
    lines.append(
        f"{'model':<10} {'arm':<24} {'n log':>8} {'n live':>8} "
        f"{'max|ΔA_inv|':>12} {'max|Δθ|':>10}  status"
    )
    for a in v.arms:
        lines.append(
            f"{a.model_id:<10} {a.arm:<24} {a.n_log:>8g} {a.n_live:>8g} "
            f"{a.max_a_inv:>12.3g} {a.max_theta:>10.3g}  {'ok' if a.ok else 'DIFFERS'}"
        )
    if any(a.n_log < a.n_live for a in v.arms):
        lines.append(
            "the log holds fewer rewards than the live model up to the watermark: the log is "
            "missing rewards the worker learned (it writes the log first, so this should not "
            "happen), or the live model was changed outside the worker"
        )
    bad = sum(not a.ok for a in v.arms)
    verdict = "OK" if v.ok else f"{bad} of {len(v.arms)} arm(s) differ"
    lines.append(f"max difference {v.max_difference:.3g} (tolerance {v.tolerance:g}): {verdict}")
    return "\n".join(lines)


def format_rebuild(r: Rebuilt) -> str:
    """What :func:`rebuild` wrote, for the terminal."""
    lines = [
        f"experiment {r.experiment}: {_describe(r.replay, r.watermark, 'new watermark')}",
        f"wrote {len(r.written)} arm(s) to Redis",
    ]
    for model_id, arm in r.left_alone:
        lines.append(f"left alone: live arm {model_id}/{arm} has no rewards in the log")
    return "\n".join(lines)


def _describe(r: Replay, watermark: Position | None, name: str) -> str:
    start = "the start" if r.snapshot is None else "snapshot %d-%d" % r.snapshot
    if r.kept_since is not None:
        start += f" (retention's base: the log before {r.kept_since} was dropped)"
    mark = "none" if watermark is None else "%d-%d" % watermark
    text = f"{name} {mark}; replayed {r.replayed} reward(s) from {start}"
    if r.unlearnable:
        text += (
            f"; skipped {r.unlearnable} reward(s) with features too large for their arm's model "
            "(this release dead-letters them; the previous one learned them)"
        )
    return text
