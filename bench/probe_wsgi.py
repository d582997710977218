"""The service plus one bench-only route, for the freshness measurement.

``GET /_bench/arm_counts?experiment=E&arms=a,b`` answers, from the parameters
this API process would score /choose with right now (the same
``ModelCache.table`` call /choose makes, so it refreshes the cache when
a refresh is due), each named arm's reward count ``n``, the process id, the
wall-clock time it looked (so a poll that queued behind other requests still
dates what it saw), and per arm the wall-clock time this process last fetched
its parameters from Redis (``loaded``: from then on every /choose of this
process scored with them, however late the poll came).
"""

from __future__ import annotations

import os
import time

from flask import Response, request

from app.api.responses import json_response
from wsgi import app  # the service exactly as gunicorn serves it

_store = app.extensions["banditd"].chooser.cache.store
_fetch = _store.load_scoring
_loaded_at: dict[str, float] = {}  # arm -> when this process last fetched its parameters


def _noted_fetch(experiment, model_id, arms, dim, extra=None):
    found = _fetch(experiment, model_id, arms, dim, extra)
    now = time.time()
    for arm in found:
        _loaded_at[arm] = now
    return found


_store.load_scoring = _noted_fetch  # the real fetch, its time noted


@app.get("/_bench/arm_counts")
def arm_counts() -> Response:
    """Reward counts of some arms as this process's /choose sees them."""
    chooser = app.extensions["banditd"].chooser
    exp = chooser.experiment(request.args["experiment"])
    table = chooser.cache.table(exp)
    looked = time.time()
    arms = request.args["arms"].split(",")
    counts = {a: float(table.state.n[table.index[a]]) for a in arms}
    loaded = {a: _loaded_at.get(a) for a in arms}
    return json_response({"pid": os.getpid(), "t": looked, "loaded": loaded, "n": counts})
