"""The console's pages: ``GET /ui/`` (every experiment) and ``GET /ui/experiments/<name>``.

The index is rendered on the server from the same figures as
``/experiments/<name>/summary``; an experiment's page is a shell whose charts,
tables and what-if panel fill in from the JSON data routes
(:mod:`app.console.data`) with the vendored uPlot (``static/vendor/uplot``,
MIT, pinned; no CDN, no build step).
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request, url_for

from app.console.data import experiment_named, settings_of, summary_of
from app.console.params import check_known, period_from
from app.console.whatif import DEFAULT_SAMPLE, MAX_SAMPLE, PROPOSABLE
from bandits import POLICIES

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
)

PERIODS = (7, 30, 90)  # the period links every page offers, in days


@bp.get("/")
def index() -> str:
    """Every experiment the key may read: policy, exploration, today's figures, lift."""
    check_known(request.args, {"days"})
    period = period_from(request.args)
    config = current_app.extensions["banditd"].config.current()
    summaries = [
        summary_of(name, request.args)
        for name in sorted(config.experiments)
        if g.api_key.allows("read", name)
    ]
    days = (period.until - period.since).days
    return render_template("index.html", summaries=summaries, days=days, periods=PERIODS)


@bp.get("/experiments/<name>")
def experiment(name: str) -> str:
    """One experiment: reward against the holdout, arm shares, config changes, what-if."""
    check_known(request.args, {"days"})
    found = experiment_named(name)
    period = period_from(request.args)
    return render_template(
        "experiment.html",
        name=name,
        data_base=url_for("console_data.summary", name=name).rsplit("/", 1)[0],
        days=(period.until - period.since).days,
        periods=PERIODS,
        settings=settings_of(found),
        config_version=found.version,
        proposable=PROPOSABLE,
        default_sample=DEFAULT_SAMPLE,
        max_sample=MAX_SAMPLE,
        policies=sorted(POLICIES),
    )
