"""The service plus one bench-only route, for the freshness measurement.

``GET /_bench/arm_counts?experiment=E&arms=a,b`` answers, from the parameters
this API process would score /choose with right now (the same
``ModelCache.table`` call /choose makes, so it refreshes the cache when
a refresh is due), each named arm's reward count ``n``, the process id, and the
wall-clock time it looked (so a poll that queued behind other requests still
dates what it saw).
"""

from __future__ import annotations

import os
import time

from flask import Response, request

from app.api.responses import json_response
from wsgi import app  # the service exactly as gunicorn serves it


@app.get("/_bench/arm_counts")
def arm_counts() -> Response:
    """Reward counts of some arms as this process's /choose sees them."""
    chooser = app.extensions["banditd"].chooser
    exp = chooser.experiment(request.args["experiment"])
    table = chooser.cache.table(exp)
    looked = time.time()
    arms = request.args["arms"].split(",")
    counts = {a: float(table.state.n[table.index[a]]) for a in arms}
    return json_response({"pid": os.getpid(), "t": looked, "n": counts})
