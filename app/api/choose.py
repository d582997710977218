"""POST /choose."""

from flask import Blueprint, Response, current_app, g, request

from app.api.responses import json_response
from app.validation import json_body, parse_choose

bp = Blueprint("choose", __name__)


@bp.post("/choose")
def choose() -> Response:
    """Choose the arm (or ranked slate) to show for a context."""
    req = parse_choose(json_body(request))
    answer = current_app.extensions["banditd"].chooser.choose(req)
    g.banditd_answer = answer  # for the metrics and the request line: no parsing it back
    return json_response(answer.body)
