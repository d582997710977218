"""Scoring a chunk of encoded rows: with one model, or each row with its segment's model.

An experiment with ``segment_by`` keeps a model per value of that context
field (app/segments.py). :class:`SegmentScorer` reads each row's value (from
its ``context`` object or the top-level field, as ``/choose`` reads it from
the context), loads a segment's model the first time it sees the value (a
value never seen by the service scores with the prior, as ``/choose`` would
start it) and keeps the ``capacity`` most recently used ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from app.config import Experiment, valid_name
from app.score.columns import CONTEXT, contexts_of
from app.score.files import Chunk, InputError
from app.score.model import LoadedModel, estimator
from app.score.record import DecisionRecorder
from bandits.estimators import BanditEstimator

# Models kept at once: one of K = 50 arms at d = 32 holds two (K, d, d) arrays, 0.8 MB.
SEGMENT_CAPACITY = 128


@dataclass
class Scored:
    """A chunk's ``(n, k)`` arms, scores and propensities, and its decision ids if recorded."""

    arms: np.ndarray
    scores: np.ndarray
    propensities: np.ndarray
    decision_ids: list[str] | None


class OneModelScorer:
    """Every row with one model (and, with a recorder, every row logged as a decision)."""

    def __init__(
        self, exp: Experiment, model: BanditEstimator, k: int, recorder: DecisionRecorder | None
    ) -> None:
        self.exp = exp
        self.model = model
        self.k = k
        self.recorder = recorder

    def score(self, chunk: Chunk, X: np.ndarray) -> Scored:
        """The slates of ``chunk``'s rows, encoded as ``X``."""
        picked = self.model.choose_many(X, self.k)
        ids = None
        if self.recorder is not None:
            ids = self.recorder.record(
                contexts_of(self.exp.features, chunk.batch),
                X,
                picked.arms,
                picked.scores,
                picked.propensities,
                picked.estimated,
            )
        return Scored(picked.arms, picked.scores, picked.propensities, ids)


class SegmentScorer:
    """Each row with the model of its segment, loaded on first sight."""

    def __init__(
        self,
        exp: Experiment,
        load: Callable[[Experiment], LoadedModel],
        k: int,
        rng: np.random.Generator,
        recorder_for: Callable[[Experiment], DecisionRecorder] | None = None,
        capacity: int = SEGMENT_CAPACITY,
    ) -> None:
        self.exp = exp
        self.load = load
        self.k = k
        self.rng = rng
        self.recorder_for = recorder_for
        self.capacity = capacity
        self._models: OrderedDict[str, tuple[BanditEstimator, DecisionRecorder | None]] = (
            OrderedDict()
        )
        self.seen: set[str] = set()

    def score(self, chunk: Chunk, X: np.ndarray) -> Scored:
        """The slates of ``chunk``'s rows, encoded as ``X``, each by its segment's model."""
        values = segment_values(self.exp, chunk)
        n = len(values)
        arms = np.empty((n, self.k), dtype=np.intp)
        scores = np.empty((n, self.k))
        propensities = np.empty((n, self.k))
        ids: list[str] | None = None if self.recorder_for is None else [""] * n
        contexts = None if ids is None else contexts_of(self.exp.features, chunk.batch)
        groups, where = np.unique(np.array(values, dtype=object), return_inverse=True)
        for g, value in enumerate(groups.tolist()):
            rows = np.flatnonzero(where == g)
            model, recorder = self._model(value)
            picked = model.choose_many(X[rows], self.k)
            arms[rows], scores[rows] = picked.arms, picked.scores
            propensities[rows] = picked.propensities
            if recorder is not None:
                made = recorder.record(
                    [{**contexts[i], self.exp.segment_by: value} for i in rows.tolist()],
                    X[rows],
                    picked.arms,
                    picked.scores,
                    picked.propensities,
                    picked.estimated,
                )
                for i, decision_id in zip(rows.tolist(), made):
                    ids[i] = decision_id
        return Scored(arms, scores, propensities, ids)

    def _model(self, value: str) -> tuple[BanditEstimator, DecisionRecorder | None]:
        if value in self._models:
            self._models.move_to_end(value)
            return self._models[value]
        view = self.exp.for_segment(value)
        fitted = estimator(view, self.load(view), self.rng)
        recorder = None if self.recorder_for is None else self.recorder_for(view)
        self._models[value] = (fitted, recorder)
        self.seen.add(value)
        if len(self._models) > self.capacity:
            self._models.popitem(last=False)
        return self._models[value]


def segment_values(exp: Experiment, chunk: Chunk) -> list[str]:
    """Each row's segment: its ``segment_by`` value, a whole number as its digits."""
    field = exp.segment_by
    if chunk.lines is not None:  # JSON lines: the field may be a string or a number
        raw = []
        for line in chunk.lines:
            row = orjson.loads(line)
            context = row.get(CONTEXT)
            inner = context.get(field) if isinstance(context, dict) else None
            raw.append(inner if inner is not None else row.get(field))
    else:
        raw = _column(chunk.batch, field)
    values = []
    for i, value in enumerate(raw):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not valid_name(value):
            raise InputError(
                f"row {chunk.first_row + i} (from 0): {exp.name} has a model per {field!r}: "
                f"give it as 1-128 letters, digits, '_', '-' or '.' (or a whole number), "
                f"got {value!r}"
            )
        values.append(value)
    return values


def _column(batch: pa.RecordBatch | pa.Table, field: str) -> Sequence[object]:
    """A Parquet batch's ``field`` values, from ``context`` where it has them."""
    flat = batch.column(field).to_pylist() if field in batch.schema.names else None
    if CONTEXT in batch.schema.names:
        context = batch.column(CONTEXT)
        if pa.types.is_struct(context.type) and context.type.get_field_index(field) >= 0:
            inner = pc.struct_field(context, field).to_pylist()
            if flat is None:
                return inner
            return [a if a is not None else b for a, b in zip(inner, flat)]
    return flat if flat is not None else [None] * batch.num_rows
