"""GET /healthz and /readyz (no API key needed)."""

import sqlalchemy.exc
from flask import Blueprint, Response, current_app

from app.api.responses import json_response
from app.cluster.client import UNAVAILABLE
from app.readiness import stream_problems

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Whether Redis and Postgres answer, the config file is good, and workers keep up.

    Without Redis nothing can be served (503). Without Postgres decisions and
    rewards still queue up in Redis, so the service is ``degraded`` but ready;
    so it is while the file is broken (the last good config serves), and while
    an experiment's stream has no live worker or lags behind.
    """
    services = current_app.extensions["banditd"]
    checks = {"redis": "ok", "postgres": "ok", "config": "ok", "workers": "ok"}
    try:
        services.redis.ping()
        problems = stream_problems(
            services.redis,
            services.config.current().experiments,
            services.settings.ready_max_lag_seconds,
        )
        if problems:
            checks["workers"] = "; ".join(problems)
    except UNAVAILABLE as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}: {exc}"
        checks["workers"] = "unknown"
    try:
        services.event_log.ping()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        checks["postgres"] = f"unavailable: {type(exc).__name__}"
    services.config.current()  # look at the file, so a bad edit shows here
    if services.config.last_error:
        checks["config"] = f"last change rejected: {services.config.last_error}"
    if checks["redis"] != "ok":
        return json_response({"status": "unavailable", "checks": checks}, status=503)
    status = "ready" if all(v == "ok" for v in checks.values()) else "degraded"
    return json_response({"status": status, "checks": checks})
