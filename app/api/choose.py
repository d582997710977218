"""POST /choose."""

from flask import Blueprint, Response, current_app, request

from app.api.responses import json_response
from app.validation import json_body, parse_choose

bp = Blueprint("choose", __name__)


@bp.post("/choose")
def choose() -> Response:
    """Choose the arm (or ranked slate) to show for a context."""
    req = parse_choose(json_body(request))
    return json_response(current_app.extensions["banditd"].chooser.choose(req))
