"""A synthetic Postgres log of any size, written fast with binary COPY.

:func:`seed` writes config versions, decisions (with ``unit_id``, some made by
the holdout), impressions and rewards that are consistent with each other and
with what the worker writes: every impression's decision exists; a reward is
``explicit`` (a click inside the window, reward 1), ``default`` (the window
closed without one, reward 0, logged when it closed) or ``late`` (a click after
the window: logged beside the default, never learned); impressions whose
window is still open at ``end`` and that have no click yet have no reward
(pending). Each experiment gets two config versions (``alpha`` and
``epsilon`` change halfway, and a new arm ``arm_7`` appears with the second).

Rows are built as numpy structured arrays in PostgreSQL's binary COPY format
(each field's length and value at fixed offsets), a chunk of decisions at a
time, so 5 million impressions take well under a minute and memory stays
bounded by the chunk. Text fields have one length per group of rows (an
experiment's ids, its arms, a policy name), so each chunk is written as a few
groups of equal-length rows; contexts are padded with JSON whitespace.

Used by the analysts' view benchmark (docs/ANALYSTS.md) and the Parquet export
benchmark::

    from bench.synthetic_log import seed
    seed(engine, impressions=5_000_000, experiments=1, days=30)
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy
from sqlalchemy.engine import Engine

from app import copy_binary as pg

ARMS = tuple(f"arm_{a}" for a in range(8))  # arm_7 arrives with the second config version
CITIES = ("berlin", "hamburg", "munich")
POLICY = "linucb"
HOLDOUT = "holdout"
WINDOW_SECONDS = 900
CHUNK_DECISIONS = 50_000
_PG_EPOCH_US = 946_684_800_000_000
_UNITS_PER_DECISION = 0.2  # 1 unit id per 5 decisions, on average
_NO_UNIT_SHARE = 0.1  # decisions made without a unit id

# click rate of each arm; the context adds to it (evening hours, Munich)
BASE_RATE = np.array([0.05, 0.08, 0.11, 0.14, 0.17, 0.20, 0.23, 0.26])


@dataclass(frozen=True)
class Summary:
    """What :func:`seed` wrote."""

    experiments: tuple[str, ...]
    decisions: int
    impressions: int
    rewards: int
    start: datetime
    end: datetime


def settings(alpha: float, epsilon: float, arms: tuple[str, ...], holdout_share: float) -> dict:
    """An experiment's settings as the config stores them (app/config.py's normalised table)."""
    value = {
        "policy": POLICY,
        "alpha": alpha,
        "epsilon": epsilon,
        "v": 1.0,
        "propensity_draws": 1000,
        "ridge": 1.0,
        "arms": list(arms),
        "max_arms": 1000,
        "position_weights": [],
        "forgetting": 1.0,
        "reward": {"default": 0.0, "window_seconds": WINDOW_SECONDS, "min": 0.0, "max": 1.0},
        "features": {
            "numeric": ["hour"],
            "categorical": {"city": list(CITIES)},
            "intercept": True,
        },
    }
    if holdout_share > 0:
        value |= {"holdout": holdout_share, "holdout_policy": "random"}
    return value


def seed(
    engine: Engine,
    *,
    impressions: int,
    experiments: int = 1,
    days: int = 30,
    holdout_share: float = 0.1,
    seed: int = 0,
    end: datetime | None = None,
    chunk: int = CHUNK_DECISIONS,
) -> Summary:
    """Append a consistent synthetic log of ``impressions`` impressions to the database.

    Parameters
    ----------
    engine : Engine
        A migrated banditd database (``banditd migrate``). Rows are appended;
        the experiments are named ``synthetic_0``, ``synthetic_1``, ... so
        empty the tables first if they may exist.
    impressions : int
        Impressions in all, split evenly over the experiments; a decision shows
        1 to 3 arms.
    experiments : int
        Number of experiments.
    days : int
        The decisions are spread evenly over the ``days`` days before ``end``.
    holdout_share : float
        Share of decisions made by the holdout (``policy = 'holdout'``, uniform
        random ranking, exact propensities); by unit where the decision has a
        unit id (90% do), else per decision.
    seed : int
        Seed of the numpy generator: the same arguments write the same log.
    end : datetime, optional
        When the log ends (default: now, to the second). Impressions of the
        last 15 minutes without a click are pending.
    chunk : int
        Decisions generated and copied at a time (bounds memory).

    Returns
    -------
    Summary
        Names and row counts written.
    """
    if end is None:
        end = datetime.now(timezone.utc).replace(microsecond=0)
    start = end - timedelta(days=days)
    rng = np.random.default_rng(seed)
    names = tuple(f"synthetic_{e}" for e in range(experiments))
    shares = np.full(experiments, impressions // experiments)
    shares[: impressions % experiments] += 1
    with_unit_id = _has_unit_id(engine)
    totals = np.zeros(3, dtype=np.int64)
    for name, count in zip(names, shares):
        totals += _seed_experiment(
            engine, rng, name, int(count), start, end, holdout_share, chunk, with_unit_id
        )
    return Summary(names, int(totals[0]), int(totals[1]), int(totals[2]), start, end)


def _has_unit_id(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sqlalchemy.text(
                    "SELECT 1 FROM information_schema.columns "
                    "WHERE table_name = 'decisions' AND column_name = 'unit_id'"
                )
            ).first()
        )


def _version(experiment: str, n: int) -> str:
    return hashlib.sha256(f"{experiment}/{n}".encode()).hexdigest()[:12]


def _seed_experiment(
    engine: Engine,
    rng: np.random.Generator,
    name: str,
    impressions: int,
    start: datetime,
    end: datetime,
    holdout_share: float,
    chunk: int,
    with_unit_id: bool,
) -> np.ndarray:
    # 1-3 arms a decision, cut so the total is exactly ``impressions``
    shown = rng.integers(1, 4, size=impressions + 1, dtype=np.int8)
    ends = np.cumsum(shown, dtype=np.int64)
    n_decisions = int(np.searchsorted(ends, impressions) + 1)
    shown = shown[:n_decisions].copy()
    shown[-1] -= ends[n_decisions - 1] - impressions
    del ends
    start_us = int(start.timestamp() * 1_000_000)
    span_us = int((end - start).total_seconds() * 1_000_000)
    change_us = start_us + span_us // 2
    versions = [
        (_version(name, 1), settings(1.0, 0.05, ARMS[:7], holdout_share), start_us),
        (_version(name, 2), settings(0.5, 0.02, ARMS, holdout_share), change_us),
    ]
    model_id = hashlib.sha256(name.encode()).hexdigest()[:8]
    n_units = max(1, int(n_decisions * _UNITS_PER_DECISION))
    unit_in_holdout = _unit_hash(np.arange(n_units), name) < holdout_share
    _copy(engine, "config_versions", _config_rows(name, versions))

    totals = np.zeros(3, dtype=np.int64)
    reward_seq = 0
    for first in range(0, n_decisions, chunk):
        last = min(n_decisions, first + chunk)
        index = np.arange(first, last)
        at_us = start_us + ((index + rng.random(len(index))) * (span_us / n_decisions)).astype(
            np.int64
        )
        k = shown[first:last]
        second = at_us >= change_us
        unit = rng.integers(0, n_units, size=len(index))
        has_unit = rng.random(len(index)) >= _NO_UNIT_SHARE
        holdout = np.where(has_unit, unit_in_holdout[unit], rng.random(len(index)) < holdout_share)
        hour = (at_us // 3_600_000_000) % 24
        city = rng.integers(0, len(CITIES), size=len(index))

        arms, propensity, score = _rank(rng, k, second, holdout)
        decision_of = np.repeat(np.arange(len(index)), k)
        position = np.concatenate([np.arange(n) for n in k]) if len(k) else np.zeros(0, int)

        tables = {
            "decisions": _decision_rows(
                name,
                index,
                at_us,
                k,
                second,
                holdout,
                has_unit,
                unit,
                hour,
                city,
                versions,
                model_id,
                with_unit_id,
            ),
            "impressions": _impression_rows(
                name,
                index[decision_of],
                arms,
                position,
                score,
                propensity,
                at_us[decision_of],
                np.where(second[decision_of], 1, 0),
                versions,
            ),
        }
        reward_rows, n_rewards, reward_seq = _reward_rows(
            rng,
            name,
            index[decision_of],
            arms,
            at_us[decision_of],
            hour[decision_of],
            city[decision_of],
            position,
            int(end.timestamp() * 1_000_000),
            reward_seq,
        )
        tables["rewards"] = reward_rows
        with engine.begin() as conn:
            cursor = conn.connection.cursor()
            for table, data in tables.items():
                columns = _COLUMNS[table]
                if table == "decisions" and with_unit_id:
                    columns += ", unit_id"
                cursor.copy_expert(
                    f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT binary)", io.BytesIO(data)
                )
        totals += (len(index), len(arms), n_rewards)
    return totals


def _unit_hash(units: np.ndarray, salt: str) -> np.ndarray:
    """A stable number in [0, 1) per unit: the same unit is always in the same group."""
    mix = np.uint64(int(hashlib.sha256(salt.encode()).hexdigest()[:15], 16))
    x = units.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + mix
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def _rank(
    rng: np.random.Generator, k: np.ndarray, second: np.ndarray, holdout: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank arms by Plackett-Luce (Gumbel keys): the policy favours better arms, the holdout
    is uniform. Returns each impression's arm, propensity and score, decision by decision."""
    n = len(k)
    available = np.ones((n, len(ARMS)), dtype=bool)
    available[~second, 7] = False
    weight = np.where(holdout[:, None], 1.0, np.exp(12.0 * BASE_RATE)[None, :])
    weight = np.where(available, weight, 0.0)
    keys = np.where(available, np.log(np.where(available, weight, 1.0)), -np.inf)
    keys = keys + rng.gumbel(size=keys.shape)
    order = np.argsort(-keys, axis=1)[:, :3]
    ranked = np.take_along_axis(weight, order, axis=1)
    remaining = weight.sum(axis=1)[:, None] - np.concatenate(
        [np.zeros((n, 1)), np.cumsum(ranked, axis=1)[:, :-1]], axis=1
    )
    propensity = ranked / remaining
    score = np.take_along_axis(keys, order, axis=1)
    keep = np.arange(3)[None, :] < k[:, None]
    return order[keep], propensity[keep], score[keep]


def _reward_rows(
    rng: np.random.Generator,
    name: str,
    index: np.ndarray,
    arms: np.ndarray,
    at_us: np.ndarray,
    hour: np.ndarray,
    city: np.ndarray,
    position: np.ndarray,
    end_us: int,
    seq: int,
) -> tuple[bytes, int, int]:
    rate = BASE_RATE[arms] * (1.0 + 0.5 * ((hour >= 18) & (hour < 23))) * (1.0 + 0.3 * (city == 2))
    rate = rate / (1.0 + position)
    click = rng.random(len(arms)) < rate
    delay_us = (rng.exponential(180.0, size=len(arms)) * 1_000_000).astype(np.int64)
    window_us = WINDOW_SECONDS * 1_000_000
    closes = at_us + window_us
    clicked_at = at_us + delay_us
    explicit = click & (delay_us < window_us) & (clicked_at <= end_us)
    default = ~explicit & (closes + 2_000_000 <= end_us)  # the worker logs it ~2 s after
    late = click & (delay_us >= window_us) & (clicked_at <= end_us) & default
    groups = []
    for kind, mask, value, when in (
        ("explicit", explicit, 1.0, clicked_at),
        ("default", default, 0.0, closes + 2_000_000),
        ("late", late, 1.0, clicked_at),
    ):
        n = int(mask.sum())
        if not n:
            continue
        groups.append(
            _rows(
                _text(_ids(name, index[mask])),
                _text(np.full(n, name.encode())),
                _text(np.array([a.encode() for a in ARMS])[arms[mask]]),
                _f8(np.full(n, value)),
                _text(np.full(n, kind.encode())),
                _i8(when[mask] - _PG_EPOCH_US),
                _i8(when[mask] // 1000),
                _i8(np.arange(seq, seq + n)),
            )
        )
        seq += n
    count = int(explicit.sum() + default.sum() + late.sum())
    return pg.HEADER + b"".join(groups) + pg.TRAILER, count, seq


def _ids(name: str, index: np.ndarray) -> np.ndarray:
    return np.char.add(f"{name}:".encode(), np.char.zfill(index.astype("S10"), 10))


def _decision_rows(
    name,
    index,
    at_us,
    k,
    second,
    holdout,
    has_unit,
    unit,
    hour,
    city,
    versions,
    model_id,
    with_unit_id,
) -> bytes:
    dim = 2 + len(CITIES)
    features = np.zeros((len(index), dim))
    features[:, 0] = 1.0
    features[:, 1] = hour
    features[np.arange(len(index)), 2 + city] = 1.0
    contexts = [
        json.dumps({"hour": h, "city": c}, separators=(",", ":")).encode()
        for h in range(24)
        for c in CITIES
    ]
    width = max(len(c) for c in contexts)
    context = np.array([c.ljust(width) for c in contexts])[hour * len(CITIES) + city]
    version = np.array([v[0].encode() for v in versions])[second.astype(int)]
    groups = []
    for is_holdout in (False, True):
        for unit_known in (False, True):
            mask = (holdout == is_holdout) & (has_unit == unit_known)
            n = int(mask.sum())
            if not n:
                continue
            fields = [
                _text(_ids(name, index[mask])),
                _text(np.full(n, name.encode())),
                _i8(at_us[mask] - _PG_EPOCH_US),
                _text(version[mask]),
                _text(np.full(n, (HOLDOUT if is_holdout else POLICY).encode())),
                _text(np.full(n, model_id.encode())),
                None,  # request_id
                _jsonb(context[mask]),
                _f8_array(features[mask]),
                _i4(k[mask]),
                _bool(np.zeros(n, dtype=bool)),
                None,  # candidates: every configured arm
            ]
            if with_unit_id:
                fields.append(
                    _text(np.char.add(b"user-", np.char.zfill(unit[mask].astype("S9"), 9)))
                    if unit_known
                    else None
                )
            groups.append(_rows(*fields))
    return pg.HEADER + b"".join(groups) + pg.TRAILER


def _impression_rows(
    name, index, arms, position, score, propensity, at_us, version_index, versions
) -> bytes:
    n = len(index)
    body = _rows(
        _text(_ids(name, index)),
        _text(np.full(n, name.encode())),
        _text(np.array([a.encode() for a in ARMS])[arms]),
        _i4(position),
        _f8(score),
        _f8(propensity),
        _bool(np.zeros(n, dtype=bool)),
        _i8(at_us - _PG_EPOCH_US),
        _text(np.array([v[0].encode() for v in versions])[version_index]),
    )
    return pg.HEADER + body + pg.TRAILER


def _config_rows(name: str, versions) -> bytes:
    rows = [
        pg.row(
            pg.text(name),
            pg.text(version),
            pg.jsonb(json.dumps(value).encode()),
            pg.timestamptz(at_us // 1000),
        )
        for version, value, at_us in versions
    ]
    return b"".join((pg.HEADER, *rows, pg.TRAILER))


_COLUMNS = {
    "config_versions": "experiment, config_version, settings, first_seen_at",
    "decisions": "decision_id, experiment, decided_at, config_version, policy, model_id, "
    "request_id, context, features, shown_count, propensity_estimated, candidates",
    "impressions": "decision_id, experiment, arm, position, score, propensity, "
    "propensity_estimated, decided_at, config_version",
    "rewards": "decision_id, experiment, arm, reward, kind, received_at, stream_ms, stream_seq",
}


def _copy(engine: Engine, table: str, data: bytes) -> None:
    with engine.begin() as conn:
        conn.connection.cursor().copy_expert(
            f"COPY {table} ({_COLUMNS[table]}) FROM STDIN WITH (FORMAT binary)", io.BytesIO(data)
        )


# -- fixed-width binary fields: (numpy dtype of the value, values) ------------------------


def _text(values: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    width = values.dtype.itemsize
    lengths = np.char.str_len(values) if len(values) else np.array([width])
    if not (lengths == width).all():
        raise ValueError("the text values of one group must have one length")
    return np.dtype(f"S{width}"), values


def _i4(values: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    return np.dtype(">i4"), values


def _i8(values: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    return np.dtype(">i8"), values


def _f8(values: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    return np.dtype(">f8"), values


def _bool(values: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    return np.dtype("u1"), values.astype(np.uint8)


def _jsonb(values: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    dtype = np.dtype([("version", "u1"), ("text", values.dtype)])
    out = np.empty(len(values), dtype=dtype)
    out["version"] = 1
    out["text"] = values
    return dtype, out


def _f8_array(values: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    n, dim = values.shape
    element = np.dtype([("length", ">i4"), ("value", ">f8")])
    dtype = np.dtype(
        [
            ("ndim", ">i4"),
            ("nulls", ">i4"),
            ("oid", ">i4"),
            ("n", ">i4"),
            ("lower", ">i4"),
            ("elements", element, (dim,)),
        ]
    )
    out = np.empty(n, dtype=dtype)
    out["ndim"], out["nulls"], out["oid"], out["n"], out["lower"] = 1, 0, 701, dim, 1
    out["elements"]["length"] = 8
    out["elements"]["value"] = values
    return dtype, out


def _rows(*fields: tuple[np.dtype, np.ndarray] | None) -> bytes:
    """Rows of equal layout in binary COPY format; a field of None is NULL in every row."""
    n = next(len(f[1]) for f in fields if f is not None)
    layout = [("count", ">i2")]
    for i, field in enumerate(fields):
        layout.append((f"length{i}", ">i4"))
        if field is not None:
            layout.append((f"value{i}", field[0]))
    out = np.empty(n, dtype=np.dtype(layout))
    out["count"] = len(fields)
    for i, field in enumerate(fields):
        if field is None:
            out[f"length{i}"] = -1
        else:
            out[f"length{i}"] = field[0].itemsize
            out[f"value{i}"] = field[1]
    return out.tobytes()
