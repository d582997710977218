"""The console's JSON data: ``GET /experiments/<name>/summary|daily|arms|config-history|what-if``.

Read-only, from the analysts' views (:mod:`app.console.queries`), the live
model in Redis (:mod:`app.console.model_view`) and, for the what-if, the code
of ``banditd evaluate`` (:mod:`app.console.whatif`); never from the /choose
path. Each answer is bounded by one experiment's cells of the period, or by
the what-if's sample, whatever the size of the log.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from app.api.responses import json_response
from app.config import ConfigError, Experiment
from app.console import model_view, queries, whatif
from app.console.params import check_known, integer, period_from
from app.errors import ApiError

bp = Blueprint("console_data", __name__)


def experiment_named(name: str) -> Experiment:
    """The configured experiment ``name``; 404 ``unknown_experiment`` if there is none."""
    experiment = current_app.extensions["banditd"].config.current().get(name)
    if experiment is None:
        raise ApiError(404, "unknown_experiment", f"no experiment named {name!r}")
    return experiment


def settings_of(experiment: Experiment) -> dict[str, Any]:
    """What the console shows of an experiment's settings: policy, exploration, holdout, arms."""
    s = experiment.settings
    keys = ("policy", "alpha", "epsilon", "v", "holdout", "holdout_policy")
    return {k: s.get(k) for k in keys} | {
        "gamma_scale": experiment.params.gamma_scale,  # squarecb's; defaults where unset
        "gamma_exponent": experiment.params.gamma_exponent,
        "arms": list(experiment.arms),
    }


def summary_of(name: str, args) -> dict[str, Any]:
    """The summary answer: settings, today's figures and the period's, with the lift."""
    experiment = experiment_named(name)
    period = period_from(args)
    today = queries.Period(period.today, period.until, period.today)
    with current_app.extensions["banditd"].engine.connect() as conn:
        totals = queries.period_groups(conn, name, period)
        today_totals = queries.period_groups(conn, name, today)
    return {
        "experiment": name,
        "config_version": experiment.version,
        "settings": settings_of(experiment),
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "today": {"day": period.today.isoformat(), **today_totals},
        "period": totals,
    }


@bp.get("/experiments/<name>/summary")
def summary(name: str) -> Response:
    """Settings, decisions and reward today and over the period, lift over the holdout."""
    check_known(request.args, {"days"})
    return json_response(summary_of(name, request.args))


@bp.get("/experiments/<name>/daily")
def daily(name: str) -> Response:
    """Per day: reward of the bandit and the holdout with 95% bands, lift, arm traffic shares."""
    check_known(request.args, {"days"})
    experiment_named(name)
    period = period_from(request.args)
    with current_app.extensions["banditd"].engine.connect() as conn:
        series = queries.daily_series(conn, name, period)
    return json_response({"experiment": name, **series})


@bp.get("/experiments/<name>/arms")
def arms(name: str) -> Response:
    """Per arm: impressions and mean reward with its interval, the model's current estimate."""
    check_known(request.args, {"days"})
    experiment = experiment_named(name)
    period = period_from(request.args)
    services = current_app.extensions["banditd"]
    with services.engine.connect() as conn:
        totals = queries.arm_totals(conn, name, period)
        x = model_view.average_context(conn, experiment)
    names = list(experiment.arms) + sorted(set(totals) - set(experiment.arms))
    estimates = model_view.arm_estimates(services.store, experiment, names, x)
    return json_response(
        {
            "experiment": name,
            "policy": experiment.policy,
            "since": period.since.isoformat(),
            "until": period.until.isoformat(),
            "arms": [
                {
                    "arm": arm,
                    "configured": arm in experiment.arms,
                    "policy": totals.get(arm, {}).get("policy"),
                    "holdout": totals.get(arm, {}).get("holdout"),
                    "model": estimates.get(arm),
                }
                for arm in names
            ],
        }
    )


@bp.get("/experiments/<name>/config-history")
def config_history(name: str) -> Response:
    """The experiment's config versions with their time in force and what each changed."""
    check_known(request.args, set())
    experiment_named(name)
    with current_app.extensions["banditd"].engine.connect() as conn:
        versions = queries.config_versions(conn, name)
    return json_response({"experiment": name, "versions": versions})


@bp.get("/experiments/<name>/what-if")
def what_if(name: str) -> Response:
    """Off-policy estimates (IPS, SNIPS, DR) of proposed settings against the current ones."""
    check_known(request.args, {*whatif.PROPOSABLE, "sample"})
    experiment = experiment_named(name)
    sample = integer(request.args, "sample", whatif.DEFAULT_SAMPLE, 100, whatif.MAX_SAMPLE)
    changes = {k: request.args[k] for k in whatif.PROPOSABLE if k in request.args}
    try:
        target = whatif.proposal(experiment, changes)
    except ConfigError as exc:
        field = next((k for k in changes if k in str(exc)), None)
        raise ApiError(400, "invalid_field", str(exc), field) from None
    services = current_app.extensions["banditd"]
    with services.engine.connect() as conn:
        answer = whatif.what_if(conn, services.settings, experiment, target, sample)
    return json_response(answer)
