"""Typed answers of /choose and /reward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RankedArm:
    """One slot of a decision: the arm, the policy's score and the propensity of the slot."""

    arm: str
    score: float
    propensity: float


@dataclass(frozen=True)
class Decision:
    """A /choose answer: the decision id to reward, the ranked arms, the config version."""

    decision_id: str
    arms: tuple[RankedArm, ...]
    config_version: str

    @property
    def arm(self) -> str:
        """The top arm (for ``k = 1``, the one chosen)."""
        return self.arms[0].arm

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "Decision":
        """A Decision from the JSON of a /choose answer."""
        return cls(
            decision_id=body["decision_id"],
            arms=tuple(RankedArm(a["arm"], a["score"], a["propensity"]) for a in body["arms"]),
            config_version=body["config_version"],
        )


@dataclass(frozen=True)
class RewardReceipt:
    """A /reward answer: ``status`` is ``accepted`` or ``already_recorded`` (a repeat)."""

    decision_id: str
    arm: str
    reward: float
    status: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "RewardReceipt":
        """A RewardReceipt from the JSON of a /reward answer."""
        return cls(body["decision_id"], body["arm"], body["reward"], body["status"])
