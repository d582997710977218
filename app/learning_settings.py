"""What a config version fixes for learning, stored once per version instead of per decision.

A decision's rewards are learned under the settings in force when it was
made: the model it belongs to, the ridge prior, the reward range, the
position weights, the forgetting factor and, for a model over item features, how
context and item features cross. Each decision names only its
config version; the settings of every version live in one Redis hash per
experiment (``keys.learning_settings``), written by whichever process
announces the version (an API process before its first decision under it,
the worker on its next pass) and read by the worker, which keeps them in
memory. A version's settings never change (the version is a fingerprint of
them), so a write is ``HSETNX`` and a read is cached for good.

Entries written by the previous release carry the settings themselves, as a
JSON object, where this one writes the version: :func:`app.events.decode`
accepts both, so a worker of this release reads a stream that API processes
of either release write (upgrade the workers first; see README, "Upgrading").
"""

from __future__ import annotations

from typing import Callable

import orjson
import redis

from app import keys
from app.config import Experiment


def settings_record(experiment: Experiment) -> bytes:
    """The learning settings of ``experiment``'s config version, as stored (JSON)."""
    record = {
        "model": experiment.model_id,
        "lam": experiment.ridge,
        "lo": experiment.reward.min,
        "hi": experiment.reward.max,
        "pw": list(experiment.position_weights),
        "g": experiment.forgetting,
    }
    if experiment.item_model:  # how a reward's item features become the shared vector
        record["item"] = experiment.settings["item_layout"]
    return orjson.dumps(record)


def queue_publish(pipe: redis.client.Pipeline, experiment: Experiment) -> None:
    """Queue the storing of ``experiment``'s learning settings under its version on ``pipe``."""
    pipe.hsetnx(
        keys.learning_settings(experiment.name), experiment.version, settings_record(experiment)
    )


class LearningSettings:
    """The worker's read-through cache of every config version's learning settings.

    ``configured`` names the experiment as the config file has it now (None if
    it has none): a version missing from Redis (lost with Redis' data, while
    processes that announced it before still run) is found there if current.
    """

    def __init__(
        self,
        client: redis.Redis,
        configured: Callable[[str], Experiment | None] = lambda name: None,
    ) -> None:
        self.redis = client
        self.configured = configured
        self._known: dict[tuple[str, str], dict] = {}

    def of(self, experiment: str, config_version: str) -> dict:
        """The settings of ``experiment``'s ``config_version``; ValueError if none are known."""
        key = (experiment, config_version)
        found = self._known.get(key)
        if found is None:
            raw = self.redis.hget(keys.learning_settings(experiment), config_version)
            if raw is None:
                raw = self._from_config(experiment, config_version)
            found = self._known[key] = orjson.loads(raw)
        return found

    def _from_config(self, experiment: str, config_version: str) -> bytes:
        current = self.configured(experiment)
        if current is None or current.version != config_version:
            raise ValueError(
                f"config version {config_version!r} of {experiment}: "
                "its learning settings are not in Redis"
            )
        with self.redis.pipeline(transaction=False) as pipe:
            queue_publish(pipe, current)  # stored again for the next reader
            pipe.execute()
        return settings_record(current)
