"""GET /experiments."""

from flask import Blueprint, Response, current_app

from app.api.responses import json_response

bp = Blueprint("experiments", __name__)


@bp.get("/experiments")
def list_experiments() -> Response:
    """Every configured experiment with its settings and config version."""
    config = current_app.extensions["banditd"].config.current()
    return json_response(
        {
            "experiments": [
                {"name": e.name, "config_version": e.version, "model_id": e.model_id, **e.settings}
                for e in config.experiments.values()
            ]
        }
    )
