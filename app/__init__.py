"""banditd: a contextual multi-armed bandit decision service."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from flask import Flask

from app import auth, console, errors
from app.api import choose, experiments, health, reward, spec
from app.choosing import Chooser
from app.features import routes as feature_store
from app.metrics import api as metrics_api
from app.model_cache import ModelCache
from app.model_push import SaveListener
from app.rewarding import Rewarder
from app.services import Services, build_services
from app.settings import Settings

MAX_BODY_BYTES = 64 * 1024

log = logging.getLogger(__name__)


@dataclass
class ApiServices(Services):
    """What the API adds to the shared services: the request-path objects."""

    chooser: Chooser
    rewarder: Rewarder
    saves: SaveListener  # started by the server (wsgi.py), not by every app a test makes


def create_app(
    settings: Settings | None = None,
    *,
    clock: Callable[[], float] = time.time,
    rng: np.random.Generator | None = None,
) -> Flask:
    """Build the Flask app.

    ``settings`` default to the environment, ``clock`` to wall time, and ``rng`` (the
    source of exploration and tie-breaks) to a fresh, unseeded generator.
    """
    settings = settings or Settings.from_env()
    base = build_services(settings)
    families = metrics_api.api_families(settings)
    cache = ModelCache(
        metrics_api.observed_store(base.store, families),
        refresh_seconds=settings.model_refresh_seconds,
    )
    services = ApiServices(
        **vars(base),
        chooser=Chooser(base.config, cache, base.stream, rng or np.random.default_rng(), clock),
        rewarder=Rewarder(base.stream, clock),
        saves=SaveListener(base.redis, cache),
    )
    if not settings.api_keys:
        log.warning("BANDITD_API_KEYS is empty: every route but health will answer 401")

    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["banditd"] = services
    errors.register(app)
    metrics_api.install(app, families)  # before auth: a refused request is timed and counted
    auth.register(app)
    for blueprint in (choose.bp, reward.bp, health.bp, experiments.bp, spec.bp, feature_store.bp):
        app.register_blueprint(blueprint)
    for blueprint in console.BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
