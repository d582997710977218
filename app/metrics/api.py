"""Wire the API's metrics and request log into the Flask app."""

from __future__ import annotations

from flask import Flask

from app.metrics import answers, endpoint
from app.metrics.families import ApiFamilies
from app.model_store import ModelStore
from app.settings import Settings


def api_families(settings: Settings) -> ApiFamilies | None:
    """The metric families an API process writes; None when ``BANDITD_METRICS=0``."""
    return ApiFamilies.create() if settings.metrics_enabled else None


def observed_store(store: ModelStore, families: ApiFamilies | None):
    """``store`` with the model cache's checks measured (itself when metrics are off)."""
    if families is None:
        return store
    from app.metrics.model_checks import ObservedModelStore

    return ObservedModelStore(store, families)


def install(app: Flask, families: ApiFamilies | None) -> None:
    """Register ``GET /metrics`` (when metrics are on) and the per-request hooks.

    Call before the other ``before_request`` hooks (auth), so that a request
    refused there is timed too.
    """
    services = app.extensions["banditd"]
    answers.register(app, services.config, families, services.settings.request_log)
    if families is not None:
        app.extensions["banditd_metrics"] = families
        app.register_blueprint(endpoint.bp)
