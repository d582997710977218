"""The floor: a bare Flask JSON endpoint, served like the service (``gunicorn bench.floor:app``).

It does what any JSON API must (parse the body, build and serialise an answer
of the same shape and size as a /choose answer) and nothing else: no auth, no
validation, no Redis, no scoring. /choose throughput is quoted as a ratio to it.
It uses orjson, as the service does, so the ratio measures banditd's own work.
"""

from __future__ import annotations

import time

import orjson
from flask import Flask, Response, request

app = Flask(__name__, static_folder=None)


@app.post("/floor")
def floor() -> Response:
    """Parse a JSON body and answer with a /choose-shaped body (k = 1)."""
    body = orjson.loads(request.get_data(cache=False))
    experiment = body.get("experiment", "floor")
    answer = {
        "decision_id": f"{experiment}:{int(time.time() * 1000):012x}{id(body):016x}",
        "arms": [{"arm": "arm00", "score": 0.123456789012345, "propensity": 0.951}],
        "config_version": "0123456789ab",
    }
    return Response(orjson.dumps(answer), mimetype="application/json")
