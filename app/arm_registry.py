"""Which candidates of a dynamic catalogue may be shown, decided before the policy chooses.

A dynamic catalogue (``arms = "dynamic"``) creates an arm the first time it is
shown, up to ``max_arms`` (the registry ``keys.arm_registry``, which the
decision's write checks and grows atomically). Once the catalogue is full, a new
candidate can never be shown. If the policy still chose among all candidates,
a decision that drew a new one would be refused and one that drew a known one
logged with a propensity that counted the new ones: off-policy estimates from
such a log are biased. So a request whose slate could show more new arms than
the catalogue has room for (``min(k, new candidates)``) is decided among its
known candidates only (they are what the log names as its candidates), and
refused with 409 ``arm_limit_reached`` when fewer than ``k`` are known.

Each API process remembers the arms it has seen registered (the registry only
grows), so a request whose candidates are all known costs no Redis call, and
one with candidates new to this process one pipelined ``SMISMEMBER`` and
``SCARD``.
"""

from __future__ import annotations

import redis

from app import keys
from app.config import Experiment
from app.errors import ApiError


class ArmRegistry:
    """A process' view of each dynamic catalogue's registered arms."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._known: dict[str, set[str]] = {}  # per experiment: arms seen registered

    def showable(self, experiment: Experiment, candidates: tuple[str, ...], k: int) -> tuple:
        """``candidates``, or only their registered ones if a slate of ``k`` could show more
        new arms than fit under ``max_arms``; 409 ``arm_limit_reached`` if then fewer than
        ``k`` are left."""
        known = self._known.setdefault(experiment.name, set())
        unseen = [arm for arm in candidates if arm not in known]
        if not unseen:
            return candidates
        where = keys.arm_registry(experiment.name)
        pipe = self.redis.pipeline(transaction=False)
        pipe.smismember(where, unseen)
        pipe.scard(where)
        members, count = pipe.execute()
        known.update(arm for arm, member in zip(unseen, members) if member)
        new = [arm for arm, member in zip(unseen, members) if not member]
        if count + min(k, len(new)) <= experiment.max_arms:  # whatever is drawn fits
            return candidates
        left = tuple(arm for arm in candidates if arm in known)
        if len(left) < k:
            raise ApiError(
                409,
                "arm_limit_reached",
                f"{experiment.name} has {count} of max_arms={experiment.max_arms} arms: a slate "
                f"of k={k} could show {min(k, len(new))} new one(s), and only {len(left)} of the "
                "candidates are known",
                "candidates",
            )
        return left

    def shown(self, experiment: Experiment, arms: list[str]) -> None:
        """Remember ``arms`` as registered: a decision that showed them was recorded."""
        self._known.setdefault(experiment.name, set()).update(arms)
