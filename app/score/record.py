"""``banditd score --record``: log scored rows as decisions, for an offline send.

Each row becomes a decision as ``/choose`` would have recorded it (its
policy, config version, context, encoded features, the ranked arms with
their scores and propensities), appended to the experiment's stream, so the
worker logs it to Postgres and opens its reward window at the time of
scoring; its ``decision_id`` goes into the output, and ``/reward`` accepts
the rewards of the arms it lists within ``reward.window_seconds``. One Redis
script call per row, as ``/choose`` makes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from app.choosing import decision_response, new_decision_id
from app.config import Experiment
from app.event_stream import ARM_LIMIT_REACHED, EventStream
from app.errors import ApiError
from app.events import DecisionEvent, Impression
from app.segments import SegmentRegistry


class RecordRefused(RuntimeError):
    """The stream refused a decision (a dynamic catalogue's ``max_arms`` reached)."""


class DecisionRecorder:
    """Records scored rows of one experiment as decisions in its stream."""

    def __init__(
        self,
        stream: EventStream,
        exp: Experiment,
        arm_names: Sequence[str],
        candidates: Sequence[str] | None,
        clock: Callable[[], float] = time.time,
        configured: Experiment | None = None,
    ) -> None:
        self.stream = stream
        self.exp = exp  # a segment's view (Experiment.for_segment) for a segment's decisions
        self.configured = configured or exp  # the experiment as configured: its version
        self.names = list(arm_names)
        self.candidates = None if candidates is None else tuple(candidates)
        self.clock = clock

    def record(
        self,
        contexts: Sequence[dict],
        X: np.ndarray,
        arms: np.ndarray,
        scores: np.ndarray,
        propensities: np.ndarray,
        estimated: bool,
    ) -> list[str]:
        """Record each row as a decision; their decision ids, in order."""
        exp = self.exp
        window_ms = int(exp.reward.window_seconds * 1000)
        ids = []
        for context, x, picked, s, p in zip(
            contexts, X, arms.tolist(), scores.tolist(), propensities.tolist()
        ):
            now_ms = int(self.clock() * 1000)
            if not ids:
                self._admit()
            self.stream.announce_config(self.configured, now_ms)  # once per process and version
            decision_id = new_decision_id(exp.name, now_ms)
            impressions = tuple(
                Impression(self.names[a], position, score, propensity)
                for position, (a, score, propensity) in enumerate(zip(picked, s, p))
            )
            response = decision_response(decision_id, impressions, exp.version)
            if exp.segment is not None and exp.segment_by not in context:
                context = {**context, exp.segment_by: exp.segment}  # logged as /choose logs it
            event = DecisionEvent(
                decision_id=decision_id,
                experiment=exp.name,
                decided_ms=now_ms,
                config_version=exp.version,
                policy=exp.policy,
                model_id=exp.model_id,
                request_id=None,
                context=context,
                features=x,
                impressions=impressions,
                propensity_estimated=estimated,
                candidates=self.candidates,
                segment=exp.segment,
            )
            outcome = self.stream.record_decision(
                event,
                deadline_ms=now_ms + window_ms,
                default_reward=exp.reward.default,
                reward_min=exp.reward.min,
                reward_max=exp.reward.max,
                response=response,
                max_arms=exp.max_arms if exp.dynamic else None,
            )
            if outcome is ARM_LIMIT_REACHED:
                raise RecordRefused(
                    f"{exp.name} already has max_arms={exp.max_arms} arms; "
                    f"row {len(ids)} of this chunk would show a new one"
                )
            ids.append(decision_id)
        return ids

    def _admit(self) -> None:
        """Count the segment among the experiment's (once; refused past ``max_segments``)."""
        if self.exp.segment is None:
            return
        try:
            SegmentRegistry(self.stream.redis).admit(self.exp, self.exp.segment)
        except ApiError as exc:
            raise RecordRefused(exc.message) from exc
