"""A model per segment: ``segment_by`` names a context field, and each of its values learns alone.

A segment is the experiment under another model id (``Experiment.for_segment``:
the experiment's model id, ``~``, the value), so everything keyed by model id
(the model store and cache, the worker's learning, the log's
``decisions.model_id``, snapshots, rebuild, ``banditd evaluate --segment``)
keeps each segment apart with no code of its own. A decision of a segment
names it (``seg`` in its record) and its rewards are learned under
``config_version~segment`` (app/event_stream.py), so they reach the segment's
model. A new value gets its model on first sight, from the prior; the set of
values seen (``keys.segments``) is bounded by ``max_segments``.
"""

from __future__ import annotations

from typing import Any, Mapping

import redis

from app import keys
from app.config import Experiment, valid_name
from app.errors import ApiError


def segment_of(experiment: Experiment, context: Mapping[str, Any]) -> str:
    """The segment a /choose context belongs to; 400 ``invalid_feature`` if it names none."""
    field = experiment.segment_by
    value = context.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a numeric store id is the same segment as its digits
    if not valid_name(value):
        raise ApiError(
            400,
            "invalid_feature",
            f"{experiment.name} has a model per {field!r}: the context must give it as 1-128 "
            f"letters, digits, '_', '-' or '.' (or a whole number), got {value!r}",
            f"context.{field}",
        )
    return value


def scoring_context(experiment: Experiment, context: Mapping[str, Any]) -> Mapping[str, Any]:
    """The context the model encodes: without the segment field unless it is also a feature."""
    field = experiment.segment_by
    spec = experiment.features
    if field not in context or field in spec.numeric or field in dict(spec.categorical):
        return context
    return {k: v for k, v in context.items() if k != field}


class SegmentRegistry:
    """Admits segments up to each experiment's ``max_segments``; one Redis call per new one."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._known: set[tuple[str, str]] = set()  # seen by this process: never refused again

    def admit(self, experiment: Experiment, value: str) -> None:
        """Record ``value`` as a segment of ``experiment``; 409 if it would be one too many."""
        key = (experiment.name, value)
        if key in self._known:
            return
        where = keys.segments(experiment.name)
        with self.redis.pipeline(transaction=True) as pipe:
            added, count = pipe.sadd(where, value).scard(where).execute()
        if added and count > experiment.max_segments:
            self.redis.srem(where, value)  # two racing newcomers may both be refused: never both in
            raise ApiError(
                409,
                "segment_limit_reached",
                f"{experiment.name} already has max_segments={experiment.max_segments} segments; "
                f"a new {experiment.segment_by} cannot get a model",
                f"context.{experiment.segment_by}",
            )
        self._known.add(key)
