"""Accept a /reward: check it against its decision and queue it for learning."""

from __future__ import annotations

import time
from typing import Callable

from app.choosing import experiment_of
from app.errors import ApiError
from app.event_stream import EventStream
from app.validation import RewardRequest


class Rewarder:
    """Records explicit rewards; the checks run atomically in Redis."""

    def __init__(self, stream: EventStream, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.clock = clock

    def reward(self, req: RewardRequest) -> dict:
        """Record one reward; returns the 202 body or raises the matching ApiError."""
        experiment = experiment_of(req.decision_id)
        if experiment is None:
            raise ApiError(404, "unknown_decision", "no such decision", "decision_id")
        # repr is the shortest string that parses back to the same float; the request
        # holds 0.0 for -0.0, so equal rewards are equal strings in the stream
        status, detail = self.stream.record_reward(
            experiment, req.decision_id, req.arm, repr(req.reward), int(self.clock() * 1000)
        )
        if status in ("accepted", "duplicate"):
            return {
                "decision_id": req.decision_id,
                "arm": req.arm,
                "reward": req.reward,
                "status": "accepted" if status == "accepted" else "already_recorded",
            }
        raise _ERRORS[status](req, detail)


_ERRORS = {
    "unknown_decision": lambda req, _: ApiError(
        404, "unknown_decision", f"no decision {req.decision_id!r} (or it expired)", "decision_id"
    ),
    "arm_not_shown": lambda req, _: ApiError(
        404, "arm_not_shown", f"arm {req.arm!r} was not shown by this decision", "arm"
    ),
    "out_of_range": lambda req, bounds: ApiError(
        400,
        "reward_out_of_range",
        f"reward must lie within [{bounds.replace('..', ', ')}]",
        "reward",
    ),
    "conflict": lambda req, earlier: ApiError(
        409, "reward_conflict", f"this impression already has reward {earlier}", "reward"
    ),
    "window_closed": lambda req, _: ApiError(
        409,
        "reward_window_closed",
        "the reward window of this decision has closed; the reward is logged as late, "
        "not learned from",
    ),
    "late_duplicate": lambda req, _: ApiError(
        409,
        "reward_window_closed",
        "the reward window of this decision has closed, and this late reward is already "
        "logged; it is not logged again",
    ),
    "late_conflict": lambda req, earlier: ApiError(
        409,
        "reward_conflict",
        f"the reward window of this decision has closed, and late reward {earlier} is already "
        "logged for this impression; this one is not logged",
        "reward",
    ),
}
