"""The events that flow through the Redis stream, as plain dataclasses.

The API appends them, the worker reads them. On the wire each is a flat Redis
stream entry of byte strings; ``encode``/``decode`` are the only places that
know the field names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson


@dataclass(frozen=True)
class Impression:
    """One arm shown by a decision."""

    arm: str
    position: int
    score: float
    propensity: float


@dataclass(frozen=True)
class DecisionEvent:
    """A /choose answer: what was shown, why, and under which config."""

    decision_id: str
    experiment: str
    decided_ms: int
    config_version: str
    policy: str
    model_id: str
    request_id: str | None
    context: dict
    features: np.ndarray
    impressions: tuple[Impression, ...]
    propensity_estimated: bool


@dataclass(frozen=True)
class RewardEvent:
    """A reward: explicit (from /reward), default (window closed) or late (not learned)."""

    decision_id: str
    experiment: str
    arm: str
    reward: float
    kind: str  # "explicit" | "default" | "late"
    received_ms: int
    features: np.ndarray
    model_id: str
    ridge: float
    reward_min: float
    reward_max: float
    weight: float = 1.0  # the position weight of the slot the arm was shown in
    forgetting: float = 1.0  # the decision's forgetting factor (1: remember everything)


@dataclass(frozen=True)
class ConfigEvent:
    """A config version of one experiment, appended before its first decision."""

    experiment: str
    config_version: str
    settings: dict
    seen_ms: int


Event = DecisionEvent | RewardEvent | ConfigEvent


def encode_decision(event: DecisionEvent) -> list[bytes | str]:
    """Flat field/value list for XADD (inside a Lua script)."""
    shown = [[i.arm, i.position, i.score, i.propensity] for i in event.impressions]
    return [
        "t",
        "decision",
        "id",
        event.decision_id,
        "ts",
        str(event.decided_ms),
        "cv",
        event.config_version,
        "policy",
        event.policy,
        "model",
        event.model_id,
        "req",
        event.request_id or "",
        "ctx",
        orjson.dumps(event.context),
        "x",
        event.features.astype(np.float64).tobytes(),
        "shown",
        orjson.dumps(shown),
        "est",
        "1" if event.propensity_estimated else "0",
    ]


def encode_config(event: ConfigEvent) -> dict[str, bytes | str]:
    """Field/value mapping for XADD."""
    return {
        "t": "config",
        "cv": event.config_version,
        "ts": str(event.seen_ms),
        "settings": orjson.dumps(event.settings),
    }


def decode(experiment: str, fields: dict[bytes, bytes]) -> Event:
    """Turn one stream entry back into its event; ValueError if it is not one."""
    kind = fields.get(b"t")
    if kind == b"decision":
        return DecisionEvent(
            decision_id=fields[b"id"].decode(),
            experiment=experiment,
            decided_ms=int(fields[b"ts"]),
            config_version=fields[b"cv"].decode(),
            policy=fields[b"policy"].decode(),
            model_id=fields[b"model"].decode(),
            request_id=fields[b"req"].decode() or None,
            context=orjson.loads(fields[b"ctx"]),
            features=np.frombuffer(fields[b"x"], dtype=np.float64),
            impressions=tuple(
                Impression(a, int(p), float(s), float(q))
                for a, p, s, q in orjson.loads(fields[b"shown"])
            ),
            propensity_estimated=fields[b"est"] == b"1",
        )
    if kind == b"reward":
        return RewardEvent(
            decision_id=fields[b"id"].decode(),
            experiment=experiment,
            arm=fields[b"arm"].decode(),
            reward=float(fields[b"r"]),
            kind=fields[b"kind"].decode(),
            received_ms=int(fields[b"ts"]),
            features=np.frombuffer(fields[b"x"], dtype=np.float64),
            model_id=fields[b"model"].decode(),
            ridge=float(fields[b"lam"]),
            reward_min=float(fields[b"lo"]),
            reward_max=float(fields[b"hi"]),
            weight=float(fields.get(b"w") or 1.0),
            forgetting=float(fields.get(b"g") or 1.0),
        )
    if kind == b"config":
        return ConfigEvent(
            experiment=experiment,
            config_version=fields[b"cv"].decode(),
            settings=orjson.loads(fields[b"settings"]),
            seen_ms=int(fields[b"ts"]),
        )
    raise ValueError(f"unknown event type {kind!r}")
