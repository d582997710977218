"""The events that flow through the Redis stream, as plain dataclasses.

The API appends them, the worker reads them. On the wire each is a Redis stream
entry of a few byte-string fields: a decision is its JSON record ``d``, its
features ``x`` and, for an item model, its impressions' item features ``z``; a
reward names its decision, arm, value, kind, time and slot, and copies the
decision's ``x``, ``z`` and ``c``, its config version (``version~segment`` for
a decision of a segmented experiment: its rewards learn into the segment's
model). What
a config version fixes for learning (model, ridge, reward range, position
weights, forgetting) is stored once per version (app/learning_settings.py),
not with every decision. The functions below and the Lua scripts in
``app/lua/`` are the only places that know the field names.

Records of the previous release are still read: a decision record with its
``model``, and a ``c`` holding the learning settings themselves (JSON).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import orjson

from app.config import SEGMENT_MARK, SHARED, SHARED_ARM, slot_weight
from app.item_models.records import item_rows, level_column, shared_vector

if TYPE_CHECKING:
    from app.learning_settings import LearningSettings


@dataclass(frozen=True, slots=True)
class Impression:
    """One arm shown by a decision."""

    arm: str
    position: int
    score: float
    propensity: float
    item: dict | None = None  # the item features it was scored with (item models only)


@dataclass(slots=True)
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
    candidates: tuple[str, ...] | None = None  # as the request named them; None: every arm
    unit_id: str | None = None  # the user or session, as the request named it
    item_vectors: np.ndarray | None = None  # (k, q) encoded item features of the impressions
    candidate_vectors: np.ndarray | None = None  # (C, q) every candidate's, in candidate order
    segment: str | None = None  # the segment (``segment_by`` value) whose model it used


@dataclass(slots=True)
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
    model_arm: str | None = None  # the row it is learned into, when not ``arm`` (shared model)
    shared_features: np.ndarray | None = None  # a hybrid model's phi (``features``: its x)
    shared_level: int | None = None  # a shared model's level column (its auto forgetting's)

    @property
    def learns_into(self) -> str:
        """The row of the model this reward updates: its arm, or the shared model's row."""
        return self.model_arm or self.arm


@dataclass(slots=True)
class ConfigEvent:
    """A config version of one experiment, appended before its first decision."""

    experiment: str
    config_version: str
    settings: dict
    seen_ms: int


Event = DecisionEvent | RewardEvent | ConfigEvent


def decision_entry(event: DecisionEvent) -> tuple[bytes, bytes, bytes, bytes]:
    """The stream entry's payload fields of a decision: ``d`` (JSON), ``x`` (features), ``z``
    and ``zc``.

    A few fields, not one per attribute: every field is a script argument and
    a stream field to copy on the /choose hot path. ``z`` holds the encoded
    item features of the impressions, in slot order, and ``zc`` those of every
    candidate, in candidate order, for off-policy estimates (both empty
    without an item model).
    """
    record = {
        "id": event.decision_id,
        "ts": event.decided_ms,
        "cv": event.config_version,
        "policy": event.policy,
        "req": event.request_id,
        "ctx": event.context,
        "shown": [
            [i.arm, i.position, i.score, i.propensity] + ([] if i.item is None else [i.item])
            for i in event.impressions
        ],
        "est": event.propensity_estimated,
        "cands": event.candidates,
        "unit": event.unit_id,
    }
    if event.segment is not None:
        record["seg"] = event.segment
    return (
        orjson.dumps(record),
        event.features.astype(np.float64).tobytes(),
        _raw(event.item_vectors),
        _raw(event.candidate_vectors),
    )


def _raw(vectors: np.ndarray | None) -> bytes:
    return b"" if vectors is None else vectors.astype(np.float64).tobytes()


def encode_config(event: ConfigEvent) -> dict[str, bytes | str]:
    """Field/value mapping for XADD."""
    return {
        "t": "config",
        "cv": event.config_version,
        "ts": str(event.seen_ms),
        "settings": orjson.dumps(event.settings),
    }


@functools.lru_cache(maxsize=256)
def _carry(data: bytes) -> dict:
    # the previous release's per-decision settings, shared by thousands of rewards: parse once
    return orjson.loads(data)


def _settings(versions: LearningSettings | None, experiment: str, config_version: str) -> dict:
    if versions is None:
        raise ValueError(
            f"config version {config_version!r}: decoding needs the learning settings store"
        )
    return versions.of(experiment, config_version)


def decode(
    experiment: str, fields: dict[bytes, bytes], versions: LearningSettings | None = None
) -> Event:
    """Turn one stream entry back into its event; ValueError if it is not one.

    ``versions`` supplies what a config version fixes for learning; only
    entries of the previous release (which carry it themselves) and config
    events decode without it.
    """
    kind = fields.get(b"t")
    if kind == b"decision":
        d = orjson.loads(fields[b"d"])
        shown = _item_vectors(fields.get(b"z"), len(d["shown"]))
        model_id = d.get("model")  # in records of the previous release
        if model_id is None:
            model_id = _settings(versions, experiment, d["cv"])["model"]
            if d.get("seg") is not None:  # a segment's own model
                model_id += SEGMENT_MARK + d["seg"]
        return DecisionEvent(
            decision_id=d["id"],
            experiment=experiment,
            decided_ms=d["ts"],
            config_version=d["cv"],
            policy=d["policy"],
            model_id=model_id,
            request_id=d["req"],
            context=d["ctx"],
            features=np.frombuffer(fields[b"x"], dtype=np.float64),
            impressions=tuple(Impression(*shown) for shown in d["shown"]),
            propensity_estimated=d["est"],
            candidates=None if d.get("cands") is None else tuple(d["cands"]),
            unit_id=d.get("unit"),  # absent from records of earlier releases
            segment=d.get("seg"),
            item_vectors=shown,
            candidate_vectors=None if shown is None else _item_vectors(fields.get(b"zc"), shown),
        )
    if kind == b"reward":
        raw, slot = fields[b"c"], int(fields[b"slot"])
        if raw[:1] == b"{":  # the previous release: the settings themselves, per shown slot
            c = _carry(raw)
            weight = c["w"][slot]
        else:
            version, _, segment = raw.decode().partition(SEGMENT_MARK)
            c = _settings(versions, experiment, version)
            if segment:  # learned into the segment's own model
                c = {**c, "model": c["model"] + SEGMENT_MARK + segment}
            weight = slot_weight(c["pw"], slot)
        x = np.frombuffer(fields[b"x"], dtype=np.float64)
        kind = fields[b"kind"].decode()
        item = c.get("item")
        phi = None
        if item is not None and kind != "late":  # learns phi of x and the item shown (late: never)
            phi = shared_vector(item, x, item_rows(fields.get(b"z"), item["q"])[slot])
            if item["m"] == SHARED:
                x, phi = phi, None
        event = RewardEvent(
            decision_id=fields[b"id"].decode(),
            experiment=experiment,
            arm=fields[b"arm"].decode(),
            reward=float(fields[b"r"]),
            kind=kind,
            received_ms=int(fields[b"ts"]),
            features=x,
            model_id=c["model"],
            ridge=float(c["lam"]),
            reward_min=float(c["lo"]),
            reward_max=float(c["hi"]),
            weight=float(weight),
            forgetting=float(c["g"]),
            model_arm=SHARED_ARM if item is not None and item["m"] == SHARED else None,
            shared_features=phi,
            shared_level=level_column(item) if item is not None and item["m"] == SHARED else None,
        )
        _check_learnable(event)
        return event
    if kind == b"config":
        return ConfigEvent(
            experiment=experiment,
            config_version=fields[b"cv"].decode(),
            settings=orjson.loads(fields[b"settings"]),
            seen_ms=int(fields[b"ts"]),
        )
    raise ValueError(f"unknown event type {kind!r}")


def _item_vectors(raw: bytes | None, rows: int | np.ndarray) -> np.ndarray | None:
    """A decision entry's item vectors: ``rows`` of them, or rows as long as ``rows``' rows."""
    if not raw:
        return None
    vectors = np.frombuffer(raw, dtype=np.float64)
    return (
        vectors.reshape(rows, -1) if isinstance(rows, int) else vectors.reshape(-1, rows.shape[1])
    )


def reward_kind(fields: dict[bytes, bytes]) -> str | None:
    """A reward entry's kind (explicit, default or late) without decoding it; else None."""
    if fields.get(b"t") != b"reward":
        return None
    return fields.get(b"kind", b"").decode(errors="replace")


REWARD_KINDS = frozenset({"explicit", "default", "late"})


def _check_learnable(event: RewardEvent) -> None:
    """ValueError if learning from ``event`` would corrupt the model instead of failing."""
    if event.kind not in REWARD_KINDS:
        raise ValueError(f"unknown reward kind {event.kind!r}")
    # the features are checked where they are learned, a whole batch at a time
    if not all(map(math.isfinite, (event.reward, event.ridge, event.weight, event.forgetting))):
        raise ValueError("the reward or a learning setting is not a finite number")
