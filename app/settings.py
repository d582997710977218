"""Process settings, read once from the environment."""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATABASE_URL = "postgresql://banditd:banditd@localhost:5432/banditd"
DEFAULT_CONFIG_PATH = "examples/experiments.toml"

KEY_ACTIONS = frozenset({"choose", "reward", "read", "items"})
_SCOPE = re.compile(
    r"(?P<experiments>\*|[A-Za-z0-9_.-]{1,128}(?:\|[A-Za-z0-9_.-]{1,128})*)"
    r":(?P<actions>\*|[a-z]+(?:\|[a-z]+)*)"
)


@dataclass(frozen=True)
class ApiKey:
    """One accepted bearer token, kept only as its SHA-256, and what it may do.

    ``grants`` holds ``(experiment, action)`` pairs, experiment ``"*"``
    standing for every experiment; ``None`` means everything (a bare key).
    """

    digest: bytes = field(repr=False)
    grants: frozenset[tuple[str, str]] | None = None

    def allows(self, action: str, experiment: str | None) -> bool:
        """Whether the key may do ``action`` on ``experiment`` (None: on every experiment)."""
        if self.grants is None or ("*", action) in self.grants:
            return True
        return experiment is not None and (experiment, action) in self.grants


def key_digest(key: str) -> bytes:
    """The SHA-256 of a key, what keys are compared by."""
    return hashlib.sha256(key.encode()).digest()


def parse_api_keys(entries: Iterable[str]) -> tuple[ApiKey, ...]:
    """The keys that ``BANDITD_API_KEYS`` entries describe.

    An entry is ``KEY`` (every action on every experiment) or
    ``KEY=SCOPE+SCOPE...`` with ``SCOPE`` = ``EXPERIMENTS:ACTIONS``, each a
    ``|``-separated list or ``*``; actions are ``choose``, ``reward``,
    ``items`` (writing the feature store, app/features; entities need
    ``*:items``) and ``read`` (``GET /experiments``, which needs ``*:read``; the
    console's pages and data of an experiment, app/console). The scopes start
    after the entry's last ``=``, so a key may end in ``=`` (base64 padding).
    A key given several times may do what any of its entries allows.

    Raises
    ------
    ValueError
        If an entry is malformed; the message names the entry by position,
        never by its text, which holds a key.
    """
    grants: dict[bytes, frozenset[tuple[str, str]] | None] = {}
    for position, entry in enumerate((e.strip() for e in entries if e.strip()), 1):
        key, sep, scopes = entry.rpartition("=")
        if not sep or not scopes:
            grants[key_digest(entry)] = None
            continue
        if not key.strip("="):
            raise ValueError(f"BANDITD_API_KEYS: entry {position} has no key before its '='")
        digest = key_digest(key)
        previous = grants.get(digest, frozenset())
        allowed = _parse_scopes(scopes, position)
        grants[digest] = None if previous is None else previous | allowed
    return tuple(ApiKey(digest, allowed) for digest, allowed in grants.items())


def _parse_scopes(text: str, position: int) -> frozenset[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for scope in text.split("+"):
        match = _SCOPE.fullmatch(scope)
        actions = match["actions"].split("|") if match else []
        if actions == ["*"]:
            actions = sorted(KEY_ACTIONS)
        if not actions or not set(actions) <= KEY_ACTIONS:
            raise ValueError(
                f"BANDITD_API_KEYS: entry {position} has a malformed scope after its last '=';"
                " expected EXPERIMENTS:ACTIONS such as 'home_feed:choose' or"
                f" '*:choose|reward', with actions among {sorted(KEY_ACTIONS)}"
            )
        pairs.update((e, a) for e in match["experiments"].split("|") for a in actions)
    return frozenset(pairs)


@dataclass(frozen=True)
class Settings:
    """Everything a banditd process takes from its environment.

    Attributes
    ----------
    config_path:
        The experiments TOML file (``BANDITD_CONFIG``).
    redis_url, database_url:
        Where the model store and event stream, and the event log live.
    api_keys:
        Accepted bearer tokens (``BANDITD_API_KEYS``, comma-separated), each
        optionally scoped to experiments and actions::

            key1,key2=home_feed:choose,key3=*:choose|reward,key4=a|b:reward+c:*

        A bare key may do everything; ``KEY=EXPERIMENTS:ACTIONS`` only that,
        with ``|`` between names, ``*`` for all, ``+`` between scopes, and the
        actions ``choose``, ``reward``, ``items`` (the feature store) and
        ``read`` (``GET /experiments``, granted by ``*:read`` only; the console
        of an experiment). See
        :func:`parse_api_keys`.
    port:
        Where ``make run`` binds gunicorn (``PORT``).
    config_check_seconds:
        How often a process looks at the config file for changes.
    model_refresh_seconds:
        How often an API process checks Redis for newer arm parameters
        (``BANDITD_MODEL_REFRESH_SECONDS``): part of the delay between a
        reward and the /choose answers that use it.
    snapshot_every, snapshot_seconds:
        The worker copies an experiment's model into Postgres after this many
        learned rewards (``BANDITD_SNAPSHOT_EVERY``), or this long after the
        last copy if it learned anything (``BANDITD_SNAPSHOT_SECONDS``).
    ready_max_lag_seconds:
        ``/readyz`` says ``degraded`` once an experiment's oldest entry not yet
        learned is older than this (``BANDITD_READY_MAX_LAG_SECONDS``).
    views_refresh_seconds:
        How often a worker refreshes the analysts' materialised views
        (``BANDITD_VIEWS_REFRESH_SECONDS``; 0: never).
    worker_linger_ms:
        How long the worker lets a new entry wait for more to join its batch
        (``BANDITD_WORKER_LINGER_MS``, counted from the entry's append time in
        its stream id; 0: read at once). Part of
        the delay between a reward and the answers that use it; in exchange a
        batch's fixed cost is shared under steady traffic.
    metrics_enabled:
        Whether the API serves ``GET /metrics`` and ``banditd worker`` its
        metrics server (``BANDITD_METRICS``; ``0`` turns both off).
    worker_metrics_port:
        Where ``banditd worker`` serves its Prometheus metrics
        (``BANDITD_WORKER_METRICS_PORT``, default 9465; 0: not at all).
    metrics_multiproc_dir:
        ``PROMETHEUS_MULTIPROC_DIR``: where every API process of a gunicorn
        writes its metrics for ``/metrics`` to sum (gunicorn.conf.py sets it).
    log_format, log_level:
        ``text`` or ``json`` lines (``BANDITD_LOG_FORMAT``), and the least
        severe level logged (``BANDITD_LOG_LEVEL``, default ``INFO``).
    request_log:
        Which answers get a request line (``BANDITD_REQUEST_LOG``): ``all``
        (the default), ``errors`` (status 400 and up) or ``none``.
    retention_days:
        How many days the Postgres log keeps (``BANDITD_RETENTION_DAYS``;
        unset: forever). An experiment's ``retention_days`` overrides it; the
        worker drops whole day partitions once every experiment in them is
        past its retention (app/retention/).
    redis_replicas_to_wait:
        How many replicas must hold a write before banditd answers for it
        (``BANDITD_REDIS_REPLICAS_TO_WAIT``; Redis ``WAIT``). Unset: 1 when
        ``REDIS_URL`` names a Redis Cluster with replicas, else 0 (app/cluster/).
    redis_wait_timeout_ms:
        How long such a write waits for its replicas before the answer is a 503
        (``BANDITD_REDIS_WAIT_TIMEOUT_MS``, default 1000).
    """

    config_path: str = DEFAULT_CONFIG_PATH
    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    api_keys: frozenset[str] = field(default_factory=frozenset, repr=False)
    port: int = 8000
    config_check_seconds: float = 1.0
    model_refresh_seconds: float = 0.05
    snapshot_every: int = 50_000
    snapshot_seconds: float = 300.0
    ready_max_lag_seconds: float = 30.0
    views_refresh_seconds: float = 300.0
    worker_linger_ms: float = 40.0
    metrics_enabled: bool = True
    worker_metrics_port: int = 9465
    metrics_multiproc_dir: str | None = None
    log_format: str = "text"
    log_level: str = "INFO"
    request_log: str = "all"
    retention_days: float | None = None
    redis_replicas_to_wait: int | None = None
    redis_wait_timeout_ms: int = 1000

    def __post_init__(self) -> None:
        self.parsed_api_keys()  # a malformed BANDITD_API_KEYS stops the process at start

    def parsed_api_keys(self) -> tuple[ApiKey, ...]:
        """``api_keys`` parsed: each key's digest and what it may do."""
        return parse_api_keys(self.api_keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        entries = [k.strip() for k in env.get("BANDITD_API_KEYS", "").split(",") if k.strip()]
        parse_api_keys(entries)  # here, in order, so that an error names the entry's position
        keys = frozenset(entries)
        return cls(
            config_path=env.get("BANDITD_CONFIG", DEFAULT_CONFIG_PATH),
            redis_url=env.get("REDIS_URL", DEFAULT_REDIS_URL),
            database_url=env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            api_keys=keys,
            port=int(env.get("PORT", "8000")),
            model_refresh_seconds=float(env.get("BANDITD_MODEL_REFRESH_SECONDS", "0.05")),
            snapshot_every=int(env.get("BANDITD_SNAPSHOT_EVERY", "50000")),
            snapshot_seconds=float(env.get("BANDITD_SNAPSHOT_SECONDS", "300")),
            ready_max_lag_seconds=float(env.get("BANDITD_READY_MAX_LAG_SECONDS", "30")),
            views_refresh_seconds=float(env.get("BANDITD_VIEWS_REFRESH_SECONDS", "300")),
            worker_linger_ms=float(env.get("BANDITD_WORKER_LINGER_MS", "40")),
            metrics_enabled=env.get("BANDITD_METRICS", "1").strip() not in ("0", "false", "no"),
            worker_metrics_port=int(env.get("BANDITD_WORKER_METRICS_PORT", "9465")),
            metrics_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            log_format=_log_format(env.get("BANDITD_LOG_FORMAT", "text")),
            log_level=_log_level(env.get("BANDITD_LOG_LEVEL", "INFO")),
            request_log=_request_log(env.get("BANDITD_REQUEST_LOG", "all")),
            retention_days=_retention_days(env.get("BANDITD_RETENTION_DAYS", "")),
            redis_replicas_to_wait=_count_or_unset(
                "BANDITD_REDIS_REPLICAS_TO_WAIT", env.get("BANDITD_REDIS_REPLICAS_TO_WAIT", "")
            ),
            redis_wait_timeout_ms=_positive_ms(
                "BANDITD_REDIS_WAIT_TIMEOUT_MS", env.get("BANDITD_REDIS_WAIT_TIMEOUT_MS", "1000")
            ),
        )


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _retention_days(text: str) -> float | None:
    """``BANDITD_RETENTION_DAYS``: a number of days > 0, or None when unset or empty."""
    if not text.strip():
        return None
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not (math.isfinite(days) and 0 < days <= 36_500):
        raise ValueError(
            f"BANDITD_RETENTION_DAYS must be a number of days > 0 and <= 36500, got {text!r}"
        )
    return days


def _count_or_unset(name: str, text: str) -> int | None:
    """A whole number >= 0, or None when unset or empty."""
    if not text.strip():
        return None
    if not text.strip().isdigit():
        raise ValueError(f"{name} must be a whole number >= 0, got {text!r}")
    return int(text)


def _positive_ms(name: str, text: str) -> int:
    """A whole number of milliseconds > 0."""
    if not text.strip().isdigit() or int(text) <= 0:
        raise ValueError(f"{name} must be a whole number of milliseconds > 0, got {text!r}")
    return int(text)


def _log_format(text: str) -> str:
    """``BANDITD_LOG_FORMAT`` checked: ``text`` or ``json``."""
    value = text.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"BANDITD_LOG_FORMAT must be 'text' or 'json', not {text!r}")
    return value


def _request_log(text: str) -> str:
    """``BANDITD_REQUEST_LOG`` checked: ``all``, ``errors`` or ``none``."""
    value = text.strip().lower()
    if value not in ("all", "errors", "none"):
        raise ValueError(f"BANDITD_REQUEST_LOG must be all, errors or none, not {text!r}")
    return value


def _log_level(text: str) -> str:
    """``BANDITD_LOG_LEVEL`` checked: one of ``LOG_LEVELS`` (any case)."""
    value = text.strip().upper()
    if value not in LOG_LEVELS:
        raise ValueError(f"BANDITD_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return value
