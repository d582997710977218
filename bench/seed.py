"""Put the bench's Redis db and Postgres database into a known state, fast.

Arm parameters are saved through :class:`app.model_store.ModelStore` and
decisions and rewards are recorded through :class:`app.event_stream.EventStream`
(the Lua scripts the API calls), pipelined over one connection, so a phase
starts from exactly what the API and the worker would have left, in seconds
instead of minutes.
"""

from __future__ import annotations

import time

import numpy as np
import redis
import sqlalchemy
from sqlalchemy.engine import Engine

from app import keys
from app.choosing import new_decision_id
from app.config import Experiment
from app.event_stream import EventStream
from app.events import DecisionEvent, Impression
from app.model_store import ArmUpdate, ModelStore
from bandits import LearningState
from bench.configs import context

TABLES = ("config_versions", "decisions", "impressions", "rewards")


def reset(client: redis.Redis, engine: Engine) -> None:
    """Empty the bench Redis db and the bench log tables."""
    client.flushdb(asynchronous=True)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"TRUNCATE {', '.join(TABLES)}"))


def seed_arms(
    client: redis.Redis,
    exp: Experiment,
    rng: np.random.Generator,
    *,
    observations: int = 64,
    batch: int = 250,
) -> None:
    """Give every arm of ``exp`` learned parameters (version 1), as after ``observations`` rewards.

    Saved in batches of ``batch`` arms so that no single transaction blocks
    Redis for long.
    """
    store = ModelStore(client)
    dim = exp.features.dim
    eye = np.eye(dim) * exp.ridge
    for start in range(0, len(exp.arms), batch):
        arms = exp.arms[start : start + batch]
        x = rng.normal(size=(len(arms), observations, dim)) / np.sqrt(dim)
        r = rng.random((len(arms), observations))
        a = eye + np.einsum("kni,knj->kij", x, x)
        a_inv = np.linalg.inv(a)
        b = np.einsum("kni,kn->ki", x, r)
        theta = np.einsum("kij,kj->ki", a_inv, b)
        updates = [
            ArmUpdate(
                model_id=exp.model_id,
                arm=arm,
                state=LearningState(
                    A_inv=a_inv[i : i + 1],
                    theta=theta[i : i + 1],
                    n=np.array([float(observations)]),
                    successes=np.array([r[i].sum()]),
                    failures=np.array([observations - r[i].sum()]),
                    A=a[i : i + 1],
                    b=b[i : i + 1],
                ),
                version=1,
            )
            for i, arm in enumerate(arms)
        ]
        store.save(exp.name, updates, b"0-0")


def record_decisions(
    client: redis.Redis,
    exp: Experiment,
    arms: list[str],
    rng: np.random.Generator,
    *,
    batch: int = 1000,
    announce: bool = True,
) -> list[str]:
    """Record one k = 1 decision per entry of ``arms`` (showing that arm); returns their ids.

    The decisions go through ``EventStream.record_decision`` on a pipeline, so
    Redis holds exactly what /choose would have stored. ``announce`` appends
    the config version first (and stores its learning settings), as an API
    process does before its first decision: once is enough.
    """
    pipe = client.pipeline(transaction=False)
    stream = EventStream(pipe)
    contexts = [context(exp, rng) for _ in range(64)]
    features = [exp.features.encode(c) for c in contexts]
    ids = []
    window_ms = int(exp.reward.window_seconds * 1000)
    if announce:
        stream.announce_config(exp, int(time.time() * 1000))
    for i, arm in enumerate(arms):
        now_ms = int(time.time() * 1000)
        decision_id = new_decision_id(exp.name, now_ms)
        event = DecisionEvent(
            decision_id=decision_id,
            experiment=exp.name,
            decided_ms=now_ms,
            config_version=exp.version,
            policy=exp.policy,
            model_id=exp.model_id,
            request_id=None,
            context=contexts[i % 64],
            features=features[i % 64],
            impressions=(Impression(arm, 0, 0.5, 0.95),),
            propensity_estimated=exp.policy == "lin_ts",
        )
        stream.record_decision(
            event,
            deadline_ms=now_ms + window_ms,
            default_reward=exp.reward.default,
            reward_min=exp.reward.min,
            reward_max=exp.reward.max,
            response=b"",
        )
        ids.append(decision_id)
        if len(pipe) >= batch:
            pipe.execute()
    pipe.execute()
    return ids


def record_rewards(
    client: redis.Redis,
    exp: Experiment,
    decisions: list[tuple[str, str]],
    rng: np.random.Generator,
    *,
    batch: int = 1000,
) -> int:
    """Record an explicit 0/1 reward for each ``(decision_id, arm)``; how many were accepted.

    Runs the record_reward script of :class:`EventStream` (the one /reward
    runs) on a pipeline; ``EventStream.record_reward`` itself decodes the reply
    at once, which a pipeline cannot give, hence the script handle.
    """
    stream = EventStream(client)
    pipe = client.pipeline(transaction=False)
    accepted = 0
    rewards = rng.integers(0, 2, size=len(decisions))
    for (decision_id, arm), reward in zip(decisions, rewards):
        stream._record_reward(
            keys=[keys.decision(exp.name, decision_id), keys.stream(exp.name)],
            args=[decision_id, arm, repr(float(reward)), int(time.time() * 1000)],
            client=pipe,
        )
        if len(pipe) >= batch:
            accepted += sum(r[0] == b"accepted" for r in pipe.execute())
    accepted += sum(r[0] == b"accepted" for r in pipe.execute())
    return accepted


def reward_bodies(decisions: list[tuple[str, str]], rng: np.random.Generator) -> list[bytes]:
    """/reward bodies, one per ``(decision_id, arm)``, with 0/1 rewards."""
    rewards = rng.integers(0, 2, size=len(decisions))
    return [
        b'{"decision_id":"%s","arm":"%s","reward":%d}' % (d.encode(), a.encode(), r)
        for (d, a), r in zip(decisions, rewards)
    ]
