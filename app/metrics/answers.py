"""What each answered request counts for: metrics and the request log line.

One ``after_request`` hook works out the route, status, experiment, decision id
and error code of an answer once, then counts it (when metrics are on) and
logs it (``app.logs.log_request``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from flask import Flask, Response, g, request

from app.choosing import experiment_of
from app.config_source import ConfigSource
from app.logs import log_request
from app.metrics.families import UNKNOWN, ApiFamilies
from app.metrics.propensity import MinimumWindow

UNMATCHED = "unmatched"  # the route label of a path no route matches (404/405)
STARTED = "banditd.started"  # the environ key of a request's arrival (perf_counter)
ANSWERS_READ = frozenset({"/choose", "/reward"})  # routes whose success body says what counts


@dataclass(slots=True)
class Answer:
    """The facts of one answered request that the metrics and the log line use."""

    method: str
    route: str
    status: int
    seconds: float
    experiment: str | None  # as the request named it
    decision_id: str | None
    error_code: str | None
    propensities: list[float]  # of a /choose answer's arms
    reward_status: str | None  # of a /reward answer: accepted or already_recorded


def register(
    app: Flask, config: ConfigSource, families: ApiFamilies | None, request_log: str = "all"
) -> None:
    """Time every request; count every answer (if ``families``) and log it.

    ``request_log`` says which answers are logged: ``all``, ``errors`` (status
    400 and up) or ``none``.
    """
    recorder = Recorder(config, families) if families is not None else None
    least_logged = {"all": 0, "errors": 400, "none": 1000}[request_log]
    app.wsgi_app = _Timed(app.wsgi_app)

    @app.after_request
    def observe(response: Response) -> Response:
        if recorder is None and response.status_code < least_logged:
            return response  # nothing to count or log
        answer = answer_of(response)
        if recorder is not None:
            recorder.record(answer)
        if answer.status < least_logged:
            return response
        log_request(
            answer.method,
            answer.route,
            answer.status,
            answer.seconds,
            answer.experiment,
            answer.decision_id,
            answer.error_code,
        )
        return response


def answer_of(response: Response) -> Answer:
    """The facts of the current request and its ``response``."""
    now = time.perf_counter()
    req = request._get_current_object()  # one context lookup instead of one per attribute
    app_globals = vars(g._get_current_object())
    started = req.environ.get(STARTED)
    seconds = now - started if started is not None else 0.0
    rule = req.url_rule
    route = rule.rule if rule is not None else UNMATCHED
    status = response.status_code
    body = app_globals.get("banditd_body")  # the parsed request body, if one was read
    experiment = decision_id = error_code = None
    propensities: list[float] = []
    reward_status = None
    if isinstance(body, dict):
        name = body.get("experiment")
        experiment = name if isinstance(name, str) else None
        sent_id = body.get("decision_id")
        if isinstance(sent_id, str):
            decision_id = sent_id
            experiment = experiment_of(sent_id)
    decided = app_globals.get("banditd_answer")  # a /choose answer, as the route made it
    if decided is not None and status == 200:
        decision_id, propensities = decided.decision_id, decided.propensities
    elif "banditd_reward_status" in app_globals and status == 202:
        reward_status = app_globals["banditd_reward_status"]
    elif status >= 400 or route in ANSWERS_READ:
        parsed = _json(response)
        if not isinstance(parsed, dict):
            pass
        elif status >= 400:
            error = parsed.get("error")
            error_code = error.get("code") if isinstance(error, dict) else None
        elif route == "/choose" and status == 200:
            decision_id = parsed.get("decision_id")
            propensities = [a["propensity"] for a in parsed.get("arms", ())]
        elif route == "/reward" and status == 202:
            reward_status = parsed.get("status")
    return Answer(
        req.method,
        route,
        status,
        seconds,
        experiment,
        decision_id,
        error_code,
        propensities,
        reward_status,
    )


def _json(response: Response):
    # every body these routes and errors answer is JSON (app.api.responses, app.errors);
    # trying to parse is cheaper than parsing the Content-Type header first
    if response.direct_passthrough:
        return None
    try:
        return orjson.loads(response.get_data())
    except orjson.JSONDecodeError:
        return None


class _Timed:
    """WSGI middleware that notes when a request arrived, in its environ.

    A plain dict write before Flask pushes its contexts: cheaper than a
    ``before_request`` hook setting ``g``, and it times the whole request.
    """

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        environ[STARTED] = time.perf_counter()
        return self.wsgi_app(environ, start_response)


class Recorder:
    """Counts answers into an API process's metric families."""

    def __init__(self, config: ConfigSource, families: ApiFamilies) -> None:
        self.config = config
        self.families = families
        self.minimums: dict[str, MinimumWindow] = {}
        self._rejected: bool | None = None
        # labelled children by label values: prometheus-client's labels() costs a lock
        # and a few conversions per call, on every request
        self._children: dict[tuple, object] = {}

    def _child(self, family, *values: str):
        key = (family, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*values)
        return child

    def label(self, experiment: str | None) -> str:
        """``experiment`` if the config names it, else ``unknown``: labels stay bounded."""
        if experiment is not None and experiment in self.config.current().experiments:
            return experiment
        return UNKNOWN

    def record(self, answer: Answer) -> None:
        """Count one answer."""
        f = self.families
        child = self._child
        f.deferred.observe(child(f.duration, answer.route), answer.seconds)
        # A decision and an accepted reward are one counter write each, not two: their
        # answers are added to banditd_responses when it is read (app.metrics.derived).
        if answer.status == 200 and answer.route == "/choose":
            experiment = self.label(answer.experiment)
            child(f.decisions, experiment).inc()
            self._propensities(experiment, answer.propensities)
        elif answer.status == 202 and answer.reward_status == "accepted":
            child(f.rewards, self.label(answer.experiment)).inc()
        else:
            child(f.responses, answer.route, str(answer.status)).inc()
            if answer.error_code is not None:
                child(f.errors, answer.route, answer.error_code).inc()
        rejected = self.config.last_error is not None
        if rejected != self._rejected:  # a gauge write only when it changes
            f.config_rejected.set(1 if rejected else 0)
            self._rejected = rejected

    def _propensities(self, experiment: str, propensities: list[float]) -> None:
        window = self.minimums.get(experiment)
        if window is None:
            window = self.minimums[experiment] = MinimumWindow()
        changed = window.add(min(propensities, default=1.0), time.monotonic())
        if changed is not None:
            self._child(self.families.propensity_min, experiment).set(changed)
