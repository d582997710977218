"""Resolve a /choose request's candidates and entities into ids, item features and context.

A candidate is an arm id, or an object ``{"id": ..., "features": {...}}``. The
rule for where a candidate's item features come from:

- an object with ``features`` brings its own: they are used as they are, and
  the store is not asked about that id (inline features replace stored ones);
- any other candidate (a bare id, or an object without ``features``) is looked
  up in the feature store; an id the store does not hold is a 400
  ``unknown_item`` naming it, or has no features, as the experiment's
  ``missing_item`` (``"error"`` or ``"empty"``) says.

Stored item features are narrowed to the item features the experiment
declares, so the store may hold more than one experiment's model uses.
Entities (``{"user": "u42"}``) add their stored features to the context,
narrowed the same way to the declared context features; the request's own
context values win, and an entity the store does not hold adds nothing (a
new user has no profile yet). Without declared item features only the
entities are looked up. Every lookup of one request is one Redis round trip
(app/features/store.py); with the process' item cache, the items it holds are
not read again unless they changed (app/features/item_cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from app.config import Experiment
from app.errors import ApiError
from app.features.store import FeatureStore
from app.item_models.stored_rows import StoredItems, StoredRows
from bandits import FeatureError, FeatureSpec

MISSING_ERROR, MISSING_EMPTY = "error", "empty"
STORED_ROWS = StoredRows()  # this process's encoded rows of stored items


@dataclass(frozen=True)
class ResolvedCandidates:
    """A /choose request's candidates with their item features, and the merged context."""

    ids: tuple[str, ...]  # candidate arm ids, in request order (the arms when none were sent)
    item_features: Sequence[dict[str, Any]] | None  # per candidate; None without item_features
    context: dict[str, Any]  # request context merged over the stored entities' features
    item_vectors: np.ndarray | None = None  # (C, q) encoded item features, when already known


def resolve(
    store: FeatureStore | Any,
    experiment: Experiment,
    candidates: Sequence[str | Mapping[str, Any]] | None,
    context: Mapping[str, Any],
    entities: Mapping[str, str] | None,
) -> ResolvedCandidates:
    """The ids, item features and merged context of one /choose request.

    ``store`` is a FeatureStore (or a Redis client: one without an item cache).
    ``candidates`` as the request sent them (ids or ``{"id", "features"?}``
    objects; None: the experiment's arms), ``entities`` maps a kind to an id.
    400 ``unknown_item`` for a candidate without features under
    ``missing_item = "error"``.
    """
    if candidates is None:
        ids, inline = experiment.arms, None
    else:
        ids = tuple(c if isinstance(c, str) else c["id"] for c in candidates)
        inline = (
            None
            if all(isinstance(c, str) for c in candidates)
            else tuple(None if isinstance(c, str) else c.get("features") for c in candidates)
        )
    return resolve_parsed(store, experiment, ids, inline, context, entities)


def resolve_parsed(
    store: FeatureStore | Any,
    experiment: Experiment,
    ids: Sequence[str],
    inline: Sequence[Mapping[str, Any] | None] | None,
    context: Mapping[str, Any],
    entities: Mapping[str, str] | None,
) -> ResolvedCandidates:
    """:func:`resolve` for candidates already split into ids and inline features.

    ``inline`` holds per candidate its inline features or None (look it up);
    ``inline`` None means no candidate brought any. This is the shape of a
    parsed ChooseRequest (``candidates``, ``inline_features``).
    """
    ids = tuple(ids)
    item_spec = experiment.item_features
    wanted = () if item_spec is None else _lookups(ids, inline)
    lookup_ids = ids if inline is None else [ids[i] for i in wanted]
    if not isinstance(store, FeatureStore):
        store = FeatureStore(store)  # a Redis client: every item read
    found = store.lookup(experiment.name, lookup_ids if wanted else (), entities or {})
    merged = _merge_context(experiment.features, found.entities, context, entities or {})
    if item_spec is None:
        return ResolvedCandidates(ids, None, merged)
    names = feature_names(item_spec)
    if inline is None and None not in found.raw_items:  # every candidate from the store
        items = StoredItems(found.raw_items, names)
        return ResolvedCandidates(ids, items, merged, STORED_ROWS.encode(experiment, items))
    stored = [None if f is None else declared_only(f, names) for f in found.items]
    if inline is None:
        items: list[dict[str, Any] | None] = stored
    else:
        items = list(inline)
        for position, features in zip(wanted, stored):
            items[position] = features
    if None in stored:
        missing = [ids[position] for position, f in zip(wanted, stored) if f is None]
        if experiment.missing_item == MISSING_ERROR:
            raise _unknown_items(experiment.name, missing)
        items = [{} if f is None else f for f in items]
    return ResolvedCandidates(ids, tuple(items), merged)


def _lookups(
    ids: tuple[str, ...], inline: Sequence[Mapping[str, Any] | None] | None
) -> Sequence[int]:
    """Positions of the candidates whose features come from the store."""
    if inline is None:
        return range(len(ids))
    return [i for i, features in enumerate(inline) if features is None]


def _merge_context(
    spec: FeatureSpec,
    stored: Mapping[str, Mapping[str, Any] | None],
    context: Mapping[str, Any],
    entities: Mapping[str, str],
) -> dict[str, Any]:
    """The request context over the entities' declared features (kinds in request order).

    400 ``invalid_feature`` naming the entity if one stores a declared feature the
    experiment cannot encode (a string for a numeric one, say): entities serve every
    experiment, so their writes cannot be checked against this one's features.
    """
    if not stored:
        return dict(context)
    names = feature_names(spec)
    merged: dict[str, Any] = {}
    for kind, features in stored.items():
        if features:
            used = {k: v for k, v in features.items() if k in names and k not in context}
            try:
                spec.encode(used)
            except FeatureError as exc:
                name = exc.field.removeprefix("context.")
                raise ApiError(
                    400,
                    "invalid_feature",
                    f"entity {kind} {entities[kind]!r} stores {name!r} that this experiment "
                    f"cannot use: {exc.message}",
                    f"entities.{kind}",
                ) from exc
            merged.update(used)
    merged.update(context)
    return merged


def declared_only(features: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """``features`` without the names the experiment does not declare."""
    if features.keys() <= names:
        return features
    return {k: v for k, v in features.items() if k in names}


def feature_names(spec: FeatureSpec) -> frozenset[str]:
    """The feature names ``spec`` declares."""
    return frozenset(spec.numeric) | frozenset(name for name, _ in spec.categorical)


def _unknown_items(experiment: str, missing: list[str]) -> ApiError:
    named = repr(missing[0])
    if len(missing) > 1:
        named += f" (and {len(missing) - 1} more: {', '.join(map(repr, missing[1:4]))}"
        named += ", ...)" if len(missing) > 4 else ")"
    return ApiError(
        400,
        "unknown_item",
        f"candidate {named} has no features in the feature store of {experiment} and none were"
        f' sent: PUT /items/{experiment}/<id> first, send {{"id", "features"}}, or set'
        ' missing_item = "empty"',
        "candidates",
    )
