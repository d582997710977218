"""POST /reward."""

from flask import Blueprint, Response, current_app, g, request

from app.api.responses import json_response
from app.validation import json_body, parse_reward

bp = Blueprint("reward", __name__)


@bp.post("/reward")
def reward() -> Response:
    """Report the reward of one shown arm; learned from within about a second."""
    req = parse_reward(json_body(request))
    answer = current_app.extensions["banditd"].rewarder.reward(req)
    g.banditd_reward_status = answer["status"]  # for the metrics: no parsing it back
    return json_response(answer, status=202)
