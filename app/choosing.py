"""Answer a /choose request: encode, score, record, respond.

No Flask here: the view parses and renders; this module decides. The only I/O
is Redis, at most three times per request: the (rate-limited) model refresh,
the feature store's lookup of item and entity features (only when there is
one to make) and one round trip that records the decision (a script, or a
transaction when no check is needed: app/event_stream.py).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import orjson

from app.arm_registry import ArmRegistry
from app.config import SHARED, Experiment
from app.config_source import ConfigSource
from app.errors import ApiError
from app.event_stream import ARM_LIMIT_REACHED, REQUEST_ID_REUSED, EventStream
from app.events import DecisionEvent, Impression
from app.features.candidates import resolve_parsed
from app.features.item_cache import ItemCache
from app.features.store import FeatureStore
from app.item_models.scoring import choose_items, encode_items
from app.model_cache import ModelCache
from app.segments import SegmentRegistry, scoring_context, segment_of
from app.validation import ChooseRequest
from bandits import FeatureError, select
from bandits.policy import Selection
from bandits.holdout import assigned_to_holdout, select_holdout

HOLDOUT = "holdout"  # the policy logged for a decision of the holdout


def new_decision_id(experiment: str, now_ms: int) -> str:
    """A unique, time-ordered decision id that names its experiment."""
    return f"{experiment}:{now_ms:012x}{secrets.token_hex(8)}"


def experiment_of(decision_id: str) -> str | None:
    """The experiment a decision id belongs to, or None if it is not one of ours."""
    experiment, sep, rest = decision_id.partition(":")
    return experiment if sep and experiment and rest else None


@dataclass(frozen=True, slots=True)
class DecisionAnswer:
    """The JSON answer of a /choose, and what the metrics and the request log say of it."""

    body: bytes
    decision_id: str
    propensities: list[float]

    @classmethod
    def replayed(cls, body: bytes) -> "DecisionAnswer":
        """The answer of an earlier request with the same request id."""
        parsed = orjson.loads(body)
        return cls(body, parsed["decision_id"], [a["propensity"] for a in parsed["arms"]])


def decision_response(decision_id: str, impressions: tuple[Impression, ...], version: str) -> bytes:
    """The JSON answer of a decision: its id, the ranked arms and the config version."""
    return orjson.dumps(
        {
            "decision_id": decision_id,
            "arms": [
                {"arm": i.arm, "score": i.score, "propensity": i.propensity} for i in impressions
            ],
            "config_version": version,
        }
    )


class Chooser:
    """Makes and records decisions for every configured experiment."""

    def __init__(
        self,
        config: ConfigSource,
        cache: ModelCache,
        stream: EventStream,
        rng: np.random.Generator,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.cache = cache
        self.stream = stream
        self.rng = rng
        self.clock = clock
        self.segments = SegmentRegistry(stream.redis)
        self.arms = ArmRegistry(stream.redis)
        # this process' item features, read once and kept in step with the store's changes
        self.features = FeatureStore(stream.redis, ItemCache())

    def experiment(self, name: str) -> Experiment:
        """The configured experiment ``name``; 404 if there is none."""
        experiment = self.config.current().get(name)
        if experiment is None:
            raise ApiError(404, "unknown_experiment", f"no experiment named {name!r}", "experiment")
        return experiment

    def choose(self, req: ChooseRequest) -> DecisionAnswer:
        """Make, record and return one decision (or the answer of an earlier one with the
        same request id)."""
        asked = req  # as sent: what a retry under its request id must repeat
        exp = configured = self.experiment(req.experiment)
        if exp.segment_by is not None:  # the segment's own model from here on
            exp = exp.for_segment(segment_of(exp, req.context))
        self._check_candidates(exp, req.candidates)
        n_candidates = len(exp.arms) if req.candidates is None else len(req.candidates)
        if req.k > n_candidates:
            raise ApiError(
                400, "invalid_field", f"k={req.k} but only {n_candidates} arms can be shown", "k"
            )
        limited = exp.dynamic and exp.model != SHARED  # a shared model keeps no state per item
        if limited and req.candidates is not None:
            showable = self.arms.showable(exp, req.candidates, req.k)
            if showable != req.candidates:  # a nearly full catalogue: its known candidates only
                req = _only(req, showable)
        items, item_rows, context = self._features(exp, req)
        try:
            x = exp.features.encode(
                context if exp.segment is None else scoring_context(exp, context)
            )
        except FeatureError as exc:
            raise ApiError(400, "invalid_feature", exc.message, exc.field) from exc
        if exp.segment is not None:  # once the request is known good: a refused one takes no slot
            self.segments.admit(exp, exp.segment)

        held_out = assigned_to_holdout(exp.holdout, exp.name, req.unit_id, self.rng)
        policy = HOLDOUT if held_out else exp.policy
        item_vectors = encoded = None
        if exp.item_model:
            encoded = encode_items(exp, items) if item_rows is None else item_rows
            selection, shown = self._select_items(exp, req, x, items, encoded, held_out)
            item_vectors = encoded[selection.arms]
        else:
            selection, shown = self._select_arms(exp, req, x, held_out)
        now_ms = int(self.clock() * 1000)
        decision_id = new_decision_id(exp.name, now_ms)
        impressions = tuple(
            Impression(arm, position, float(s), float(p), item)
            for position, ((arm, item), s, p) in enumerate(
                zip(shown, selection.scores, selection.propensities)
            )
        )
        response = decision_response(decision_id, impressions, exp.version)
        # The config version must reach the stream before the first decision made under it.
        self.stream.announce_config(configured, now_ms)  # a segment's model id is not the config's
        event = DecisionEvent(
            decision_id=decision_id,
            experiment=exp.name,
            decided_ms=now_ms,
            config_version=exp.version,
            policy=policy,
            model_id=exp.model_id,
            request_id=req.request_id,
            context=context,
            features=x,
            impressions=impressions,
            propensity_estimated=selection.estimated,
            candidates=req.candidates,
            unit_id=req.unit_id,
            item_vectors=item_vectors,
            candidate_vectors=encoded,
            segment=exp.segment,
        )
        earlier = self.stream.record_decision(
            event,
            deadline_ms=now_ms + int(exp.reward.window_seconds * 1000),
            default_reward=exp.reward.default,
            reward_min=exp.reward.min,
            reward_max=exp.reward.max,
            response=response,
            max_arms=exp.max_arms if limited else None,
            fingerprint=fingerprint(asked) if req.request_id else "",
        )
        if earlier is REQUEST_ID_REUSED:
            raise ApiError(
                422,
                "request_id_reused",
                f"request_id {req.request_id!r} was used by an earlier /choose that asked "
                "something else; a retry must repeat its body (a new request needs a new id)",
                "request_id",
            )
        if earlier is ARM_LIMIT_REACHED:
            raise ApiError(
                409,
                "arm_limit_reached",
                f"{exp.name} already has max_arms={exp.max_arms} arms; a new one cannot be shown",
                "candidates",
            )
        if earlier is not None:
            return DecisionAnswer.replayed(earlier)
        if limited:
            self.arms.shown(exp, [i.arm for i in impressions])
        return DecisionAnswer(response, decision_id, [i.propensity for i in impressions])

    def _select_arms(
        self, exp: Experiment, req: ChooseRequest, x: np.ndarray, held_out: bool
    ) -> tuple[Selection, list[tuple[str, None]]]:
        """A per-arm model's (or the holdout's) slate and the arms it shows."""
        table = self.cache.table(exp, req.candidates or ())
        candidates = None if req.candidates is None else table.rows(req.candidates)
        if held_out:
            selection = select_holdout(
                exp.holdout_policy, len(table.arms), self.rng, k=req.k, candidates=candidates
            )
        else:
            selection = select(
                exp.policy, table.state, x, self.rng, exp.params, k=req.k, candidates=candidates
            )
        return selection, [(table.arms[a], None) for a in selection.arms]

    def _select_items(
        self,
        exp: Experiment,
        req: ChooseRequest,
        x: np.ndarray,
        items: Sequence[dict[str, Any]],
        encoded: np.ndarray,
        held_out: bool,
    ) -> tuple[Selection, list[tuple[str, dict[str, Any]]]]:
        """An item model's (or the holdout's) slate, and the arms it shows with their features."""
        ids = exp.arms if req.candidates is None else req.candidates
        if held_out:
            selection = select_holdout(exp.holdout_policy, len(ids), self.rng, k=req.k)
        else:
            selection = choose_items(exp, self.cache, ids, x, encoded, self.rng, req.k)
        return selection, [(ids[a], items[a]) for a in selection.arms]

    def _features(
        self, exp: Experiment, req: ChooseRequest
    ) -> tuple[Sequence[dict[str, Any]] | None, np.ndarray | None, dict[str, Any]]:
        """The candidates' item features (item models), encoded if known, and the context
        merged over entities.

        Whatever the store holds of both comes in one Redis round trip, and none without
        entities or an item model.
        """
        if exp.item_model or req.entities:
            resolved = resolve_parsed(
                self.features,
                exp,
                exp.arms if req.candidates is None else req.candidates,
                req.inline_features,
                req.context,
                req.entities,
            )
            return resolved.item_features, resolved.item_vectors, resolved.context
        if req.inline_features is not None:
            raise ApiError(
                400,
                "invalid_field",
                f'{exp.name} has a model per arm (model = "disjoint"): its candidates are '
                'ids; item features need model = "shared" or "hybrid"',
                "candidates",
            )
        return None, None, req.context

    def _check_candidates(self, exp: Experiment, requested: tuple[str, ...] | None) -> None:
        if exp.dynamic:
            if requested is None:
                raise ApiError(
                    400,
                    "missing_field",
                    f"{exp.name} has a dynamic catalogue: send the candidate arms",
                    "candidates",
                )
            # the request schema already restricts candidate ids to valid arm names
        elif requested is not None:
            known = exp.arm_positions
            for arm in requested:
                if arm not in known:
                    raise ApiError(
                        400,
                        "unknown_arm",
                        f"candidate {arm!r} is not an arm of {exp.name}",
                        "candidates",
                    )


def _only(req: ChooseRequest, kept: tuple[str, ...]) -> ChooseRequest:
    """``req`` with only the candidates ``kept`` (and their inline features)."""
    inline = req.inline_features
    if inline is not None:
        keep = set(kept)
        inline = tuple(f for arm, f in zip(req.candidates, inline) if arm in keep)
    return replace(req, candidates=kept, inline_features=inline)


def fingerprint(req: ChooseRequest) -> str:
    """What a /choose request asked, as a hash: equal for bodies that differ only in how
    their JSON is written (key order, spacing, ``3`` or ``3.0``), not in what it says."""
    asked = (
        req.experiment,
        _numbers_as_written_once(req.context),
        req.candidates,
        req.k,
        req.unit_id,
        _numbers_as_written_once(req.inline_features),
        req.entities,
    )
    canonical = orjson.dumps(asked, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


def _numbers_as_written_once(value: Any) -> Any:
    """``value`` with every whole float as an int (``3.0`` and ``3e0`` as ``3``), recursively."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _numbers_as_written_once(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_written_once(v) for v in value]
    return value
