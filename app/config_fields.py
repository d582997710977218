"""Readers of the experiments file's values, each checking one kind of value.

Each takes the value (or its table) and ``where`` (``experiments.NAME``), and
returns the value parsed or raises :class:`ConfigError` saying where and what
is wrong. :mod:`app.config` assembles an experiment from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from bandits import FeatureSpec
from bandits.item_models import ItemLayout

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
MAX_NAME_LENGTH = 128

AUTO_FORGETTING = 0.0  # forgetting = "auto" as a number (decisions carry it to the worker)
DEFAULT_MAX_SEGMENTS = 100_000
REWARD_KEYS = {"default", "window_seconds", "min", "max"}
FEATURE_KEYS = {"numeric", "categorical", "intercept"}
ITEM_FEATURE_KEYS = {"numeric", "categorical"}
DISJOINT, SHARED, HYBRID = "disjoint", "shared", "hybrid"
MODELS = (DISJOINT, SHARED, HYBRID)  # per-arm (today's), over item features, both


class ConfigError(ValueError):
    """The experiments file is unreadable or invalid; the message says where."""


@dataclass(frozen=True)
class RewardRule:
    """How rewards of one experiment are bounded and defaulted."""

    default: float = 0.0
    window_seconds: float = 900.0
    min: float = 0.0
    max: float = 1.0


def valid_name(name: object) -> bool:
    """Whether ``name`` can be an experiment or arm id (it ends up in Redis keys)."""
    return isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH and set(name) <= NAME_CHARS


def arms(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where}.arms must be a non-empty list of arm ids, or "dynamic"')
    for arm in value:
        if not isinstance(arm, str):
            raise ConfigError(f"{where}.arms: {arm!r} is not a string")
        check_name(arm, f"{where}.arms")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}.arms has duplicates")
    return tuple(value)


def position_weights(value: Any, where: str) -> tuple[float, ...]:
    where = f"{where}.position_weights"
    if not isinstance(value, list) or len(value) > 100:
        raise ConfigError(f"{where} must be a list of at most 100 numbers in (0, 1]")
    weights = tuple(
        number({"weight": w}, "weight", 1.0, where, low=0.0, high=1.0, strict=True) for w in value
    )
    return weights


def forgetting(table: Mapping[str, Any], where: str, features: FeatureSpec) -> float:
    """The configured discount in [0.5, 1], or AUTO_FORGETTING for ``"auto"``."""
    if isinstance(table.get("forgetting"), str):
        if table["forgetting"] != "auto":
            raise ConfigError(
                f'{where}.forgetting must be a number in [0.5, 1] or "auto", '
                f"got {table['forgetting']!r}"
            )
        if not features.intercept:
            raise ConfigError(
                f'{where}.forgetting = "auto" needs the intercept (features.intercept = true): '
                "it compares each arm's recent mean reward with its model's"
            )
        return AUTO_FORGETTING
    try:
        return number(table, "forgetting", 1.0, where, low=0.5, high=1.0)
    except ConfigError as exc:
        raise ConfigError(f'{exc} (or "auto")') from None


def segments(table: Mapping[str, Any], where: str) -> tuple[str | None, int]:
    """The context field that segments the experiment (None: one model) and the segment limit."""
    segment_by = table.get("segment_by")
    if segment_by is not None and (not isinstance(segment_by, str) or not segment_by):
        raise ConfigError(f"{where}.segment_by must be the name of a context field")
    if "max_segments" in table and segment_by is None:
        raise ConfigError(f"{where}.max_segments needs segment_by")
    limit = number(
        table, "max_segments", DEFAULT_MAX_SEGMENTS, where, low=1, high=10_000_000, integer=True
    )
    return segment_by, int(limit)


def item_model(
    table: Mapping[str, Any], where: str, context: FeatureSpec
) -> tuple[str, FeatureSpec | None, dict[str, list[str]] | None, ItemLayout | None]:
    """The model kind, item features, declared interactions (None: all pairs) and layout."""
    model = table.get("model", DISJOINT)
    if model not in MODELS:
        raise ConfigError(f"{where}.model must be one of {list(MODELS)}, got {model!r}")
    if model == DISJOINT:
        for key in ("item_features", "interactions"):
            if key in table:
                raise ConfigError(
                    f'{where}.{key} needs model = "shared" or "hybrid" (a per-arm model '
                    "does not score items by their features)"
                )
        return model, None, None, None
    if "item_features" not in table:
        raise ConfigError(f'{where}: model = "{model}" needs [{where}.item_features]')
    value = table["item_features"]
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.item_features must be a table")
    only_keys(value, ITEM_FEATURE_KEYS, f"{where}.item_features")
    items = features({**value, "intercept": False}, where, "item_features")
    interactions = table.get("interactions")
    if interactions is not None:
        if not isinstance(interactions, Mapping) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v)
            for v in interactions.values()
        ):
            raise ConfigError(
                f"{where}.interactions must map context feature names to lists of item "
                'feature names, e.g. { hour = ["pay"] }'
            )
        interactions = {k: list(v) for k, v in interactions.items()}
    try:
        layout = ItemLayout.from_specs(context, items, interactions)
    except ValueError as exc:
        raise ConfigError(f"{where}.interactions: {exc}") from exc
    return model, items, interactions, layout


# A reward window of at most a year: its decision's hash and pending entry live that long
# (Redis expiry times and the pending scores are milliseconds that must stay integers).
MAX_WINDOW_SECONDS = 366 * 86_400
MAX_REWARD = 1e15  # as the API bounds a reward (app/openapi.json)


def reward(value: Any, where: str) -> RewardRule:
    where = f"{where}.reward"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table")
    only_keys(value, REWARD_KEYS, where)
    bounds = {"low": -MAX_REWARD, "high": MAX_REWARD}
    rule = RewardRule(
        default=number(value, "default", 0.0, where, **bounds),
        window_seconds=number(
            value, "window_seconds", 900.0, where, low=0.0, strict=True, high=MAX_WINDOW_SECONDS
        ),
        min=number(value, "min", 0.0, where, **bounds),
        max=number(value, "max", 1.0, where, **bounds),
    )
    if not rule.min < rule.max:
        raise ConfigError(f"{where}: min must be below max")
    if not rule.min <= rule.default <= rule.max:
        raise ConfigError(f"{where}.default must lie within [min, max]")
    return rule


def features(value: Any, where: str, table: str = "features") -> FeatureSpec:
    where = f"{where}.{table}"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table")
    only_keys(value, FEATURE_KEYS, where)
    numeric = value.get("numeric", [])
    categorical = value.get("categorical", {})
    intercept = value.get("intercept", True)
    if not isinstance(numeric, list) or not all(isinstance(n, str) for n in numeric):
        raise ConfigError(f"{where}.numeric must be a list of feature names")
    if not isinstance(categorical, Mapping) or not all(
        isinstance(v, list) and v and all(isinstance(c, str) for c in v)
        for v in categorical.values()
    ):
        raise ConfigError(f"{where}.categorical must map each feature to a list of values")
    if not isinstance(intercept, bool):
        raise ConfigError(f"{where}.intercept must be true or false")
    try:
        spec = FeatureSpec.from_mapping(
            numeric=numeric, categorical=dict(categorical), intercept=intercept
        )
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if spec.dim == 0:
        raise ConfigError(f"{where}: no features and no intercept")
    return spec


def number(
    table: Mapping[str, Any],
    key: str,
    default: float,
    where: str,
    *,
    low: float | None = None,
    high: float | None = None,
    strict: bool = False,
    integer: bool = False,
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}.{key} must be a finite number, got {value!r}")
    if integer and int(value) != value:
        raise ConfigError(f"{where}.{key} must be a whole number")
    if low is not None and (value < low or (strict and value == low)):
        raise ConfigError(f"{where}.{key} must be {'>' if strict else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{where}.{key} must be <= {high}, got {value}")
    return float(value)


def only_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def check_name(name: str, where: str) -> None:
    if not valid_name(name):
        raise ConfigError(
            f"{where}: {name!r} must be 1-{MAX_NAME_LENGTH} characters of letters, digits, _-."
        )
