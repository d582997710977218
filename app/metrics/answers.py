"""What each answered request counts for: metrics and the request log line.

One ``after_request`` hook works out the route, status, experiment, decision id
and error code of an answer once, then counts it (when metrics are on) and
logs it (``app.logs.log_request``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import orjson
from flask import Flask, Response, g, request

from app.choosing import experiment_of
from app.config import Config
from app.config_source import ConfigSource
from app.logs import log_request
from app.metrics.direct import DirectCounter
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
    """Counts answers into an API process's metric families.

    A decision and an accepted reward (nearly every answer) take a path of
    their own: one cached object per experiment, whose counter is written
    straight to its file slot (app.metrics.direct), and whose other figures
    (the latency, the propensities shown) are queued for the once-a-second
    flush (app.metrics.deferred), which also does what need not be done per
    request.
    """

    def __init__(self, config: ConfigSource, families: ApiFamilies) -> None:
        self.config = config
        self.families = families
        # labelled children by label values: prometheus-client's labels() costs a lock
        # and a few conversions per call, on every request
        self._children: dict[tuple, object] = {}
        self._choose_duration = families.duration.labels("/choose")
        self._reward_duration = families.duration.labels("/reward")
        # by the experiment name a request gave, for the config last seen by a flush (a
        # reload may add or drop names, which changes their label)
        self._labelled_for: Config | None = None
        self._decided: dict[str | None, _Decided] = {}
        self._rewarded: dict[str | None, DirectCounter] = {}
        # by label, kept across reloads: one counter (and window) per series
        self._decided_by_label: dict[str, _Decided] = {}
        self._rewarded_by_label: dict[str, DirectCounter] = {}
        self._rejected: bool | None = None
        families.deferred.every_flush(self.catch_up)

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
        # A decision and an accepted reward are one counter write each, not two: their
        # answers are added to banditd_responses when it is read (app.metrics.derived).
        if answer.status == 200 and answer.route == "/choose":
            self.families.deferred.observe(self._choose_duration, answer.seconds)
            decided = self._decided.get(answer.experiment)
            if decided is None:
                decided = self._decided[answer.experiment] = self._new_decided(answer.experiment)
            decided.decisions.inc()
            decided.shown.append(answer.propensities)
        elif answer.status == 202 and answer.reward_status == "accepted":
            self.families.deferred.observe(self._reward_duration, answer.seconds)
            rewarded = self._rewarded.get(answer.experiment)
            if rewarded is None:
                rewarded = self._rewarded[answer.experiment] = self._new_rewarded(answer.experiment)
            rewarded.inc()
        else:
            f = self.families
            child = self._child
            f.deferred.observe(child(f.duration, answer.route), answer.seconds)
            child(f.responses, answer.route, str(answer.status)).inc()
            if answer.error_code is not None:
                child(f.errors, answer.route, answer.error_code).inc()

    def catch_up(self) -> None:
        """Once a second (each flush): the least propensities shown, the config's state."""
        config = self.config.current()
        if config is not self._labelled_for:
            self._decided, self._rewarded, self._labelled_for = {}, {}, config
        now = time.monotonic()
        for decided in list(self._decided_by_label.values()):
            decided.catch_up(now)
        rejected = self.config.last_error is not None
        if rejected != self._rejected:  # a gauge write only when it changes
            self.families.config_rejected.set(1 if rejected else 0)
            self._rejected = rejected

    def _new_decided(self, experiment: str | None) -> "_Decided":
        label = self.label(experiment)
        decided = self._decided_by_label.get(label)
        if decided is None:
            f = self.families
            counter = DirectCounter(self._child(f.decisions, label))
            decided = _Decided(counter, f.propensity_min.labels(label))
            self._decided_by_label[label] = decided
        return decided

    def _new_rewarded(self, experiment: str | None) -> DirectCounter:
        label = self.label(experiment)
        rewarded = self._rewarded_by_label.get(label)
        if rewarded is None:
            rewarded = DirectCounter(self._child(self.families.rewards, label))
            self._rewarded_by_label[label] = rewarded
        return rewarded


class _Decided:
    """One experiment series' decisions: their counter, and the propensities shown since a flush."""

    __slots__ = ("decisions", "shown", "propensity_min", "window")

    def __init__(self, decisions: DirectCounter, propensity_min) -> None:
        self.decisions = decisions
        self.shown: deque[list[float]] = deque()  # appended per decision, drained per flush
        self.propensity_min = propensity_min
        self.window = MinimumWindow()

    def catch_up(self, now: float) -> None:
        """Move the propensities shown since the last call into the window and its gauge."""
        least = math.inf
        pop = self.shown.popleft
        while True:
            try:
                propensities = pop()
            except IndexError:
                break
            least = min(least, min(propensities, default=1.0))
        if least == math.inf:
            return
        changed = self.window.add(least, now)
        if changed is not None:
            self.propensity_min.set(changed)
