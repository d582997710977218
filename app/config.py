"""The experiments file: parse, validate and version it.

Product people edit one TOML file. Each ``[experiments.NAME]`` table becomes an
:class:`Experiment`. Every experiment carries two fingerprints:

- ``version`` changes whenever anything in its table changes; decisions name it,
  and the event log keeps every version seen.
- ``model_id`` changes only when the meaning of the parameters changes (the
  feature layout or the ridge prior). Tuning ``alpha``, ``epsilon``, ``v``, the
  policy, the arms or the reward window keeps the learned parameters.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Mapping, Sequence

from app import config_fields as fields
from app.config_fields import (  # noqa: F401  (ConfigError, valid_name, the model kinds: re-exported)
    AUTO_FORGETTING,
    DEFAULT_MAX_SEGMENTS,
    DISJOINT,
    HYBRID,
    SHARED,
    ConfigError,
    RewardRule,
    valid_name,
)
from bandits import POLICIES, FeatureSpec, PolicyParams
from bandits.holdout import HOLDOUT_POLICIES
from bandits.item_models import ITEM_POLICIES, ItemLayout

DYNAMIC = "dynamic"
DEFAULT_MAX_ARMS = 10_000
SEGMENT_MARK = "~"  # model id ~ segment value: never in a model id or a valid segment value

EXPERIMENT_KEYS = {
    "forgetting",
    "holdout",
    "holdout_policy",
    "max_arms",
    "policy",
    "position_weights",
    "alpha",
    "epsilon",
    "v",
    "gamma_scale",
    "gamma_exponent",
    "ridge",
    "propensity_draws",
    "arms",
    "reward",
    "features",
    "retention_days",
    "model",
    "item_features",
    "interactions",
    "missing_item",
    "segment_by",
    "max_segments",
}
MIN_RIDGE = 1e-6
MAX_DAYS = 36_500  # retention of a century: past it, dates leave what Postgres and Python hold
MISSING_ITEM_CHOICES = ("error", "empty")  # an id the feature store lacks: a 400, or no features
SHARED_ARM = "*"  # the row a shared model's state is kept under (never a valid arm id)


@dataclass(frozen=True)
class Experiment:
    """One experiment as configured, with its fingerprints."""

    name: str
    policy: str
    params: PolicyParams
    ridge: float
    arms: tuple[str, ...]  # empty for a dynamic catalogue
    reward: RewardRule
    features: FeatureSpec
    version: str
    model_id: str
    settings: dict[str, Any]
    dynamic: bool = False
    max_arms: int = DEFAULT_MAX_ARMS
    position_weights: tuple[float, ...] = ()
    forgetting: float = 1.0  # AUTO_FORGETTING for forgetting = "auto"
    holdout: float = 0.0  # share of decisions made without the bandit
    holdout_policy: str = "random"
    retention_days: float | None = None  # how long the log keeps it; None: BANDITD_RETENTION_DAYS
    model: str = DISJOINT
    item_features: FeatureSpec | None = None  # declared for a shared or hybrid model only
    layout: ItemLayout | None = None  # how context and item features cross (shared, hybrid)
    segment_by: str | None = None  # the context field whose every value gets a model of its own
    max_segments: int = DEFAULT_MAX_SEGMENTS
    segment: str | None = None  # set on the view of one segment (:meth:`for_segment`)
    missing_item: str = "error"  # a candidate the feature store lacks: "error" (400) or "empty"

    def position_weight(self, position: int) -> float:
        """How likely a user is to look at slot ``position`` (1.0 without position weights)."""
        return slot_weight(self.position_weights, position)

    @property
    def item_model(self) -> bool:
        """Whether candidates are scored from their item features (a shared or hybrid model)."""
        return self.model != DISJOINT

    def for_segment(self, value: str) -> Experiment:
        """The experiment as one segment of it sees it: the same config, a model of its own."""
        return replace(self, model_id=f"{self.model_id}{SEGMENT_MARK}{value}", segment=value)

    @cached_property
    def arm_positions(self) -> dict[str, int]:
        """Map each configured arm id to its position in ``arms``."""
        return {arm: i for i, arm in enumerate(self.arms)}


@dataclass(frozen=True)
class Config:
    """All experiments of one version of the file."""

    experiments: dict[str, Experiment]

    def get(self, name: str) -> Experiment | None:
        """The experiment called ``name``, or None."""
        return self.experiments.get(name)


def load_config(path: str) -> Config:
    """Read and validate the experiments file at ``path``."""
    return read_config(path)[0]


def read_config(path: str) -> tuple[Config, str]:
    """Read and validate the experiments file at ``path``; the config and the file's text."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8: {exc}") from exc
    return config_from_text(text, path), text


def config_from_text(text: str, source: str) -> Config:
    """Parse and validate the text of an experiments file; ``source`` names it in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def parse_config(raw: Mapping[str, Any]) -> Config:
    """Validate an already-parsed config mapping."""
    fields.only_keys(raw, {"experiments"}, "top level")
    tables = raw.get("experiments")
    if not isinstance(tables, Mapping) or not tables:
        raise ConfigError("needs at least one [experiments.NAME] table")
    return Config({name: _experiment(name, table) for name, table in tables.items()})


def _experiment(name: str, table: Any) -> Experiment:
    where = f"experiments.{name}"
    fields.check_name(name, where)
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    fields.only_keys(table, EXPERIMENT_KEYS, where)

    policy = table.get("policy")
    if policy not in POLICIES:
        raise ConfigError(f"{where}.policy must be one of {sorted(POLICIES)}, got {policy!r}")
    params = PolicyParams(
        alpha=fields.number(table, "alpha", 1.0, where, low=0.0),
        epsilon=fields.number(table, "epsilon", 0.0, where, low=0.0, high=1.0),
        v=fields.number(table, "v", 1.0, where, low=0.0, strict=True),
        draws=int(
            fields.number(
                table, "propensity_draws", 1000, where, low=10, high=100_000, integer=True
            )
        ),
        gamma_scale=fields.number(table, "gamma_scale", 10.0, where, low=0.0),
        gamma_exponent=fields.number(table, "gamma_exponent", 0.5, where, low=0.0, high=1.0),
    )
    # below 1e-6 even features near 1 would be too large for the model (bandits.MAX_LEVERAGE)
    ridge = fields.number(table, "ridge", 1.0, where, low=MIN_RIDGE)
    dynamic = table.get("arms") == DYNAMIC
    arms = () if dynamic else fields.arms(table.get("arms"), where)
    max_arms = int(
        fields.number(
            table, "max_arms", DEFAULT_MAX_ARMS, where, low=1, high=1_000_000, integer=True
        )
    )
    reward = fields.reward(table.get("reward", {}), where)
    features = fields.features(table.get("features", {}), where)
    position_weights = fields.position_weights(table.get("position_weights", []), where)
    forgetting = fields.forgetting(table, where, features)
    holdout = fields.number(table, "holdout", 0.0, where, low=0.0, high=0.5)
    holdout_policy = table.get("holdout_policy", "random")
    retention_days = (
        fields.number(table, "retention_days", 1.0, where, low=0.0, strict=True, high=MAX_DAYS)
        if "retention_days" in table
        else None
    )
    if holdout_policy not in HOLDOUT_POLICIES:
        raise ConfigError(
            f"{where}.holdout_policy must be one of {list(HOLDOUT_POLICIES)}, "
            f"got {holdout_policy!r}"
        )
    model, item_features, interactions, layout = fields.item_model(table, where, features)
    segment_by, max_segments = fields.segments(table, where)
    missing_item = table.get("missing_item", "error")
    if missing_item not in MISSING_ITEM_CHOICES:
        raise ConfigError(
            f"{where}.missing_item must be one of {list(MISSING_ITEM_CHOICES)}, "
            f"got {missing_item!r}"
        )
    if layout is not None and policy not in ITEM_POLICIES:
        raise ConfigError(
            f'{where}: model = "{model}" scores items with one of {sorted(ITEM_POLICIES)}, '
            f"not {policy!r}"
        )

    settings = {
        "policy": policy,
        "alpha": params.alpha,
        "epsilon": params.epsilon,
        "v": params.v,
        "propensity_draws": params.draws,
        "ridge": ridge,
        "arms": DYNAMIC if dynamic else list(arms),
        "max_arms": max_arms,
        "position_weights": list(position_weights),
        "forgetting": "auto" if forgetting == AUTO_FORGETTING else forgetting,
        "reward": {
            "default": reward.default,
            "window_seconds": reward.window_seconds,
            "min": reward.min,
            "max": reward.max,
        },
        "features": {
            "numeric": list(features.numeric),
            "categorical": {k: list(v) for k, v in features.categorical},
            "intercept": features.intercept,
        },
    }
    if policy == "squarecb" or {"gamma_scale", "gamma_exponent"} & set(table):
        # absent otherwise, so that the versions of existing configs stay
        settings |= {"gamma_scale": params.gamma_scale, "gamma_exponent": params.gamma_exponent}
    if holdout > 0:  # absent otherwise, so that the versions of existing configs stay
        settings |= {"holdout": holdout, "holdout_policy": holdout_policy}
    if missing_item != "error":  # likewise
        settings["missing_item"] = missing_item
    if retention_days is not None:  # likewise
        settings["retention_days"] = retention_days
    if segment_by is not None:  # likewise
        settings |= {"segment_by": segment_by, "max_segments": max_segments}
    model_basis = {"columns": features.columns, "ridge": ridge}
    if segment_by is not None:  # a model per segment means something else than one for all
        model_basis["segment_by"] = segment_by
    if layout is not None:  # likewise: a per-arm model's version and model id stay
        settings |= {
            "model": model,
            "item_features": {
                "numeric": list(item_features.numeric),
                "categorical": {k: list(v) for k, v in item_features.categorical},
            },
            "interactions": interactions,
            "item_layout": layout_record(model, layout),
        }
        model_basis |= {
            "model": model,
            "item_columns": item_features.columns,
            "pairs": [list(p) for p in layout.pairs],
        }
    if position_weights:  # they change what theta estimates: attractiveness, not click rate
        model_basis["position_weights"] = list(position_weights)
    return Experiment(
        name=name,
        policy=policy,
        params=params,
        ridge=ridge,
        arms=arms,
        reward=reward,
        features=features,
        version=_fingerprint(settings, 12),
        model_id=_fingerprint(model_basis, 8),
        settings=settings,
        dynamic=dynamic,
        max_arms=max_arms,
        position_weights=position_weights,
        forgetting=forgetting,
        holdout=holdout,
        holdout_policy=holdout_policy,
        retention_days=retention_days,
        model=model,
        item_features=item_features,
        layout=layout,
        segment_by=segment_by,
        max_segments=max_segments,
        missing_item=missing_item,
    )


def layout_record(model: str, layout: ItemLayout) -> dict[str, Any]:
    """An item model's kind and layout as stored with its config version (JSON)."""
    return {
        "m": model,
        "d": layout.context_dim,
        "q": layout.item_dim,
        "p": [list(p) for p in layout.pairs],
        "a": layout.context_alone,
    }


def slot_weight(weights: Sequence[float], position: int) -> float:
    """The weight of slot ``position`` under ``position_weights`` (the last one repeats)."""
    if not weights:
        return 1.0
    return weights[min(position, len(weights) - 1)]


def _fingerprint(value: Any, length: int) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]
