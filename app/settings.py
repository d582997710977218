"""Process settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATABASE_URL = "postgresql://banditd:banditd@localhost:5432/banditd"
DEFAULT_CONFIG_PATH = "examples/experiments.toml"


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
        Accepted bearer tokens (``BANDITD_API_KEYS``, comma-separated).
    port:
        Where ``make run`` binds gunicorn (``PORT``).
    config_check_seconds:
        How often a process looks at the config file for changes.
    model_refresh_seconds:
        How often an API process checks Redis for newer arm parameters.
    """

    config_path: str = DEFAULT_CONFIG_PATH
    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    api_keys: frozenset[str] = field(default_factory=frozenset)
    port: int = 8000
    config_check_seconds: float = 1.0
    model_refresh_seconds: float = 0.1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Build settings from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        keys = frozenset(k.strip() for k in env.get("BANDITD_API_KEYS", "").split(",") if k.strip())
        return cls(
            config_path=env.get("BANDITD_CONFIG", DEFAULT_CONFIG_PATH),
            redis_url=env.get("REDIS_URL", DEFAULT_REDIS_URL),
            database_url=env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            api_keys=keys,
            port=int(env.get("PORT", "8000")),
        )
