"""The analysts' views equal a recomputation from the raw rows, and docs/ANALYSTS.md's queries
give the known answers of a seeded log (the SQL is read from the document)."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import mean, stdev

import numpy as np
import pytest
import sqlalchemy
from alembic import command
from alembic.config import Config as AlembicConfig

from app.analytics import views
from app.analytics.views import refresh_analyst_views
from app.cli import MIGRATIONS
from app.services import database_engine, sqlalchemy_url
from bandits.features import FeatureSpec
from bench import synthetic_log
from tests import analyst_log
from tests.analyst_recompute import (
    Z,
    approx,
    arm_daily_of,
    assert_rows,
    experiment_daily_of,
    lift_daily_of,
    outcomes_of,
    settings_diff,
    top_rewards,
)
from tests.conftest import rows

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ANALYSTS.md"


@pytest.fixture
def log(engine):
    """The seeded log (tests/analyst_log.py), written and the materialised views refreshed."""
    data = analyst_log.build(datetime.now(timezone.utc))
    analyst_log.write(engine, data)
    assert refresh_analyst_views(engine)
    yield data
    with engine.begin() as conn:  # leave no cells of this log to the next test
        conn.execute(sqlalchemy.text("TRUNCATE config_versions, decisions, impressions, rewards"))
    refresh_analyst_views(engine)


# -- (a) every view against its recomputation ------------------------------------------------


def test_outcomes_is_each_impression_with_its_decision_and_final_reward(engine, log):
    expected = outcomes_of(log)
    actual = rows(engine, "SELECT * FROM outcomes")
    assert len(actual) == len(log.impressions)
    key = lambda o: (o["decision_id"], o["arm"])  # noqa: E731
    by_key = {key(a): a for a in actual}
    assert len(by_key) == len(actual)
    for e in expected:
        a = by_key[key(e)]
        for column in (
            "experiment decided_at day config_version policy holdout unit_id arm position "
            "score propensity reward reward_kind rewarded_at context candidates"
        ).split():
            assert approx(a[column], e[column]), (column, a, e)
    # a late reward never replaces the default; the 5 impressions still waiting are NULL
    late = {(r["decision_id"], r["arm"]) for r in log.rewards if r["kind"] == "late"}
    assert late and all(by_key[k]["reward_kind"] == "default" for k in late)
    assert sum(a["reward"] is None for a in actual) == 5


def test_arm_daily_counts_every_slot_and_final_rewards(engine, log):
    actual = rows(engine, "SELECT * FROM arm_daily ORDER BY experiment, day, arm, holdout")
    assert_rows(actual, arm_daily_of(log))


def test_experiment_daily_means_and_intervals_of_the_top_slot(engine, log):
    actual = rows(engine, "SELECT * FROM experiment_daily ORDER BY experiment, day, holdout")
    assert_rows(actual, experiment_daily_of(log))
    decisions = defaultdict(int)
    for d in log.decisions:
        decisions[(d["experiment"], d["decided_at"].date(), d["policy"] == "holdout")] += 1
    assert {(a["experiment"], a["day"], a["holdout"]): a["decisions"] for a in actual} == decisions
    # n = 1: a mean, no interval (push_copy's one bandit decision)
    [single] = [a for a in actual if a["experiment"] == "push_copy" and not a["holdout"]]
    assert (single["rewarded"], single["mean_reward"], single["ci_low"]) == (1, 1.0, None)


def test_lift_daily_is_the_difference_with_a_welch_interval(engine, log):
    actual = rows(engine, "SELECT * FROM lift_daily ORDER BY experiment, day")
    assert_rows(actual, lift_daily_of(log))
    [push] = [a for a in actual if a["experiment"] == "push_copy"]
    assert (push["lift"], push["lift_relative"], push["ci_low"]) == (1.0, None, None)


def test_config_history_says_when_each_version_was_in_force_and_what_it_changed(engine, log):
    actual = rows(engine, "SELECT * FROM config_history ORDER BY experiment, in_force_from")
    by_version = {a["config_version"]: a for a in actual}
    v1, v2 = by_version["hf_v1"], by_version["hf_v2"]
    assert (v1["in_force_from"], v1["in_force_until"]) == (analyst_log.DAY1, analyst_log.DAY2)
    assert (v2["in_force_from"], v2["in_force_until"]) == (analyst_log.DAY2, None)
    assert (v1["changed"], v1["previous_version"], v2["previous_version"]) == (None, None, "hf_v1")
    assert v2["changed"] == {
        "alpha": {"old": 1.0, "new": 0.5},
        "arms": {"old": ["a", "b", "c"], "new": ["a", "b", "c", "d"]},
        "reward.window_seconds": {"old": 900, "new": 600},
    }
    assert v2["changed"] == settings_diff(
        log.settings("home_feed", "hf_v1"), log.settings("home_feed", "hf_v2")
    )
    assert v2["settings"] == log.settings("home_feed", "hf_v2")


def test_settings_diff_reports_added_and_removed_keys_as_null_on_the_missing_side(engine):
    old = {"alpha": 1, "reward": {"min": 0, "max": 1}, "features": {"numeric": ["a"]}}
    new = {"alpha": 1, "holdout": 0.1, "reward": {"min": 0}, "features": {"numeric": ["b"]}}
    [row] = rows(
        engine,
        "SELECT settings_diff(CAST(:old AS jsonb), CAST(:new AS jsonb)) AS d",
        old=json.dumps(old),
        new=json.dumps(new),
    )
    assert (
        row["d"]
        == settings_diff(old, new)
        == {
            "holdout": {"old": None, "new": 0.1},
            "reward.max": {"old": 1, "new": None},
            "features.numeric": {"old": ["a"], "new": ["b"]},
        }
    )


def test_pending_rewards_lists_impressions_without_a_final_reward_and_their_window(engine, log):
    now = datetime.now(timezone.utc)
    expected = []
    for o in outcomes_of(log):
        if o["reward"] is not None:
            continue
        window = log.settings(o["experiment"], o["config_version"])["reward"]["window_seconds"]
        closes = o["decided_at"] + timedelta(seconds=window)
        expected.append(
            {
                "decision_id": o["decision_id"],
                "arm": o["arm"],
                "window_seconds": window,
                "default_reward": 0.0,
                "window_closes_at": closes,
                "overdue": closes < now,
                "holdout": o["holdout"],
                "unit_id": o["unit_id"],
            }
        )
    expected.sort(key=lambda e: (e["decision_id"], e["arm"]))
    actual = rows(engine, "SELECT * FROM pending_rewards ORDER BY decision_id, arm")
    assert_rows(actual, expected)
    assert [a["overdue"] for a in actual].count(True) == 2  # the decision at 23:58, 2 arms


@pytest.mark.parametrize(
    "features",
    [
        {"numeric": ["hour"], "categorical": {"city": ["berlin", "hamburg"]}, "intercept": True},
        {"numeric": [], "categorical": {}, "intercept": True},
        {"numeric": ["b", "a"], "categorical": {}, "intercept": False},
        # two categoricals declared in the order jsonb keeps them (shorter names first)
        {
            "numeric": ["x"],
            "categorical": {"os": ["ios", "android"], "city": ["rome"]},
            "intercept": True,
        },
    ],
)
def test_feature_columns_label_each_position_as_bandits_features_encodes_it(engine, log, features):
    settings = {**analyst_log.TWO_CATS, "features": features}
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO config_versions VALUES ('labels', 'v', CAST(:s AS jsonb), now())"
            ),
            {"s": json.dumps(settings)},
        )
    spec = analyst_log.spec_of(settings)
    actual = rows(
        engine, "SELECT * FROM feature_columns WHERE experiment = 'labels' ORDER BY position"
    )
    assert [a["label"] for a in actual] == spec.columns
    assert [a["position"] for a in actual] == list(range(spec.dim))
    assert [a["array_index"] for a in actual] == list(range(1, spec.dim + 1))
    assert all(a["order_certain"] == (len(features["categorical"]) <= 1) for a in actual)
    # each one-hot position is where encode() puts the 1
    for a in actual:
        if a["kind"] == "categorical":
            x = spec.encode({a["feature"]: a["value"]})
            assert x[a["position"]] == 1.0 and x.sum() == 1.0 + spec.intercept


def test_feature_columns_say_when_jsonb_may_have_reordered_two_categorical_features(engine, log):
    # two_cats declares tier before city; jsonb keeps city first (same length, sorted)
    declared = analyst_log.spec_of(analyst_log.TWO_CATS).columns
    actual = rows(
        engine,
        "SELECT label, order_certain FROM feature_columns WHERE experiment = 'two_cats'"
        " ORDER BY position",
    )
    assert [a["label"] for a in actual] != declared
    assert sorted(a["label"] for a in actual) == sorted(declared)
    assert not any(a["order_certain"] for a in actual)


def test_feature_columns_label_the_logged_vectors(engine, log):
    labelled = rows(
        engine,
        "SELECT d.decision_id, d.context, array_agg(f.label ORDER BY f.position) AS labels, "
        "d.features FROM decisions d JOIN feature_columns f USING (experiment, config_version) "
        "WHERE d.experiment = 'home_feed' GROUP BY d.decision_id, d.log_day",
    )
    assert len(labelled) == sum(d["experiment"] == "home_feed" for d in log.decisions)
    for d in labelled:
        spec = FeatureSpec.from_mapping(["hour"], {"city": ["berlin", "hamburg"]})
        assert d["labels"] == spec.columns
        np.testing.assert_array_equal(d["features"], spec.encode(d["context"]))


def test_daily_views_change_only_when_refreshed(engine, log):
    before = rows(engine, "SELECT sum(impressions) AS n FROM arm_daily")[0]["n"]
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DELETE FROM rewards WHERE experiment = 'push_copy'"))
        conn.execute(sqlalchemy.text("DELETE FROM impressions WHERE experiment = 'push_copy'"))
    assert rows(engine, "SELECT sum(impressions) AS n FROM arm_daily")[0]["n"] == before
    assert refresh_analyst_views(engine)
    assert rows(engine, "SELECT sum(impressions) AS n FROM arm_daily")[0]["n"] == before - 4


def test_a_refresh_already_running_elsewhere_is_skipped(engine, log, migrated_database):
    other = database_engine(migrated_database)
    try:
        with other.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key()})
            assert refresh_analyst_views(engine) is False
        assert refresh_analyst_views(engine) is True
    finally:
        other.dispose()


def _lock_key() -> int:
    return views._LOCK


# -- foreign keys --------------------------------------------------------------------------


def test_an_impression_needs_its_decision(engine, log):
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="impressions_decision_fk"):
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO impressions VALUES ('nowhere', 'home_feed', 'a', 0, 0, 1, false,"
                    " now(), 'hf_v1')"
                )
            )


def test_a_reward_needs_its_impression(engine, log):
    # the decision exists, but arm b was not shown in it
    shown = {i["arm"] for i in log.impressions if i["decision_id"] == "push_copy:0"}
    assert "friendly" not in shown
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="rewards_impression_fk"):
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO rewards VALUES ('push_copy:0', 'push_copy', 'friendly', 1, "
                    "'late', now(), 1, 1)"
                )
            )


def test_one_transaction_may_write_a_reward_before_its_impression_and_decision(engine):
    # the checks wait for the commit, so the order of a batch's tables does not matter
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO rewards VALUES ('d1', 'e', 'a', 1, 'explicit', now(), 1, 1);"
                "INSERT INTO impressions VALUES ('d1', 'e', 'a', 0, 0, 1, false, now(), 'v');"
                "INSERT INTO decisions (decision_id, experiment, decided_at, config_version, "
                "policy, model_id, context, features, shown_count, propensity_estimated) "
                "VALUES ('d1', 'e', now(), 'v', 'linucb', 'm', '{}', '{1}', 1, false)"
            )
        )
    assert rows(engine, "SELECT reward, reward_kind FROM outcomes") == [
        {"reward": 1.0, "reward_kind": "explicit"}
    ]


# -- (c) comments ----------------------------------------------------------------------------

RELATIONS = """
SELECT c.relname, c.relkind, a.attname, col_description(c.oid, a.attnum) AS comment,
       obj_description(c.oid, 'pg_class') AS relation_comment
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'v', 'm', 'p') AND c.relname <> 'alembic_version'
  AND NOT c.relispartition
"""


def test_every_table_view_and_column_has_a_comment(engine):
    found = rows(engine, RELATIONS)
    names = {f["relname"] for f in found}
    assert {
        "config_versions",
        "decisions",
        "impressions",
        "rewards",
        "model_snapshots",
        "impression_rewards",
        "outcomes",
        "daily_cells",
        "arm_daily",
        "experiment_daily",
        "lift_daily",
        "config_history",
        "pending_rewards",
        "feature_columns",
    } <= names
    assert [f["relname"] for f in found if not f["relation_comment"]] == []
    assert [f"{f['relname']}.{f['attname']}" for f in found if not f["comment"]] == []


def test_the_contract_views_have_their_columns(engine):
    contract = {
        "outcomes": "decision_id experiment decided_at config_version policy holdout unit_id "
        "arm position propensity reward reward_kind rewarded_at score context",
        "arm_daily": "experiment day arm holdout impressions rewarded reward_sum mean_reward",
        "experiment_daily": "experiment day holdout decisions impressions rewarded mean_reward "
        "ci_low ci_high",
        "lift_daily": "experiment day policy_mean holdout_mean lift ci_low ci_high lift_relative",
        "config_history": "experiment config_version in_force_from in_force_until settings "
        "changed",
    }
    found = defaultdict(set)
    for f in rows(engine, RELATIONS):
        found[f["relname"]].add(f["attname"])
    for view, columns in contract.items():
        assert set(columns.split()) <= found[view], view
    views = {
        r["table_name"] for r in rows(engine, "SELECT table_name FROM information_schema.views")
    }
    assert set(contract) | {"pending_rewards", "feature_columns"} <= views


def test_the_migration_downgrades_and_upgrades_again(engine, migrated_database):
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(migrated_database).replace("%", "%%"))
    engine.dispose()
    try:
        command.downgrade(config, "0003")
        found = rows(engine, RELATIONS)
        assert not {"outcomes", "daily_cells", "feature_columns"} & {f["relname"] for f in found}
        assert ("decisions", "unit_id") not in {(f["relname"], f["attname"]) for f in found}
        assert [f["comment"] for f in found if f["relname"] == "decisions" and f["comment"]] == [
            "the candidate arms the request named; NULL: every configured arm"
        ]
    finally:
        command.upgrade(config, "head")
    assert "outcomes" in {f["relname"] for f in rows(engine, RELATIONS)}


# -- (b) docs/ANALYSTS.md: every question's SQL gives the known answer --------------------

QUESTION = re.compile(r"^### (\d+)\. (.+?)$(.*?)(?=^#{1,3} |\Z)", re.M | re.S)
SQL_BLOCK = re.compile(r"^```sql\n(.*?)^```", re.M | re.S)


def questions() -> dict[int, tuple[str, str]]:
    """docs/ANALYSTS.md's questions: number -> (title, its one SQL block)."""
    text = DOC.read_text().split("\n## Questions\n", 1)[1]
    found = {}
    for number, title, body in QUESTION.findall(text):
        blocks = SQL_BLOCK.findall(body)
        assert len(blocks) == 1, f"question {number} needs exactly one sql block"
        found[int(number)] = (title, blocks[0])
    return found


def home(outcomes: list[dict]) -> list[dict]:
    """home_feed's outcomes."""
    return [o for o in outcomes if o["experiment"] == "home_feed"]


def percentile_cont(values: list[float], q: float) -> float:
    """Postgres's percentile_cont: linear interpolation between the closest ranks."""
    return float(np.percentile(np.array(values, dtype=float), q * 100, method="linear"))


def n_candidates(log, o) -> int:
    """The number of candidates of the outcome's decision."""
    if o["candidates"]:
        return len(o["candidates"])
    return len(log.settings(o["experiment"], o["config_version"])["arms"])


def answer_1(log):
    days = (analyst_log.DAY1.date(), analyst_log.DAY2.date())
    cells = [c for c in arm_daily_of(log) if c["experiment"] == "home_feed" and c["day"] in days]
    return sorted(cells, key=lambda c: (c["day"], c["holdout"], c["arm"]))


def answer_2(log):
    days = (analyst_log.DAY1.date(), analyst_log.DAY2.date())
    top = [o for o in home(outcomes_of(log)) if o["day"] in days]
    groups = top_rewards(top)
    p = [r for (_, _, holdout), v in groups.items() if not holdout for r in v]
    h = [r for (_, _, holdout), v in groups.items() if holdout for r in v]
    lift = mean(p) - mean(h)
    half = Z * math.sqrt(stdev(p) ** 2 / len(p) + stdev(h) ** 2 / len(h))
    return [
        {
            "policy_mean": mean(p),
            "holdout_mean": mean(h),
            "lift": lift,
            "ci_low": lift - half,
            "ci_high": lift + half,
            "lift_relative": lift / mean(h),
            "policy_n": len(p),
            "holdout_n": len(h),
        }
    ]


def answer_3(log):
    return [r for r in lift_daily_of(log) if r["experiment"] == "home_feed"]


def answer_4(log):
    return [
        {
            "config_version": "hf_v1",
            "in_force_from": analyst_log.DAY1,
            "in_force_until": analyst_log.DAY2,
            "changed": None,
        },
        {
            "config_version": "hf_v2",
            "in_force_from": analyst_log.DAY2,
            "in_force_until": None,
            "changed": {
                "alpha": {"old": 1.0, "new": 0.5},
                "arms": {"old": ["a", "b", "c"], "new": ["a", "b", "c", "d"]},
                "reward.window_seconds": {"old": 900, "new": 600},
            },
        },
    ]


def answer_5(log):
    at = analyst_log.DAY2
    groups = defaultdict(list)
    for o in home(outcomes_of(log)):
        if o["position"] == 0 and o["reward"] is not None:
            if at - timedelta(days=1) <= o["decided_at"] < at + timedelta(days=1):
                period = "before" if o["decided_at"] < at else "after"
                groups[(period, o["holdout"])].append(o["reward"])
    return [
        {
            "period": period,
            "holdout": holdout,
            "n": len(v),
            "mean_reward": mean(v),
            "ci_half_width": Z * stdev(v) / math.sqrt(len(v)),
        }
        for (period, holdout), v in sorted(
            groups.items(), key=lambda g: (g[0][0] != "before", g[0][1])
        )
    ]


def answer_6(log):
    days = defaultdict(list)
    for o in home(outcomes_of(log)):
        if o["position"] == 0 and not o["holdout"]:
            days[o["day"]].append(o["propensity"])
    return [
        {
            "day": day,
            "decisions": len(p),
            "exploration_share": mean(1 - x for x in p),
            "unlikely_top_share": mean(float(x < 0.5) for x in p),
        }
        for day, p in sorted(days.items())
    ]


def answer_7(log):
    decided = {d["decision_id"]: d["decided_at"] for d in log.decisions}
    days = defaultdict(lambda: defaultdict(list))
    for r in log.rewards:
        if r["experiment"] == "home_feed":
            at = decided[r["decision_id"]]
            days[at.date()][r["kind"]].append((r["received_at"] - at).total_seconds())
    return [
        {
            "day": day,
            "explicit": len(k["explicit"]),
            "defaulted": len(k["default"]),
            "late": len(k["late"]),
            "median_delay_s": percentile_cont(k["explicit"], 0.5),
            "p90_delay_s": percentile_cont(k["explicit"], 0.9),
            "max_late_delay_s": max(k["late"]) if k["late"] else None,
        }
        for day, k in sorted(days.items())
    ]


def answer_8(log):
    groups = defaultdict(list)
    for o in home(outcomes_of(log)):
        if o["reward"] is not None and not o["holdout"]:
            groups[(o["context"]["city"], o["arm"])].append(o["reward"])
    return [
        {"city": city, "arm": arm, "impressions": len(v), "mean_reward": mean(v)}
        for (city, arm), v in sorted(groups.items())
    ]


def answer_9(log):
    shown = {(i["decision_id"], i["arm"]): i["position"] for i in log.impressions}
    counts = defaultdict(lambda: [0, 0, 0])
    for d in log.decisions:
        if d["experiment"] != "home_feed":
            continue
        offered = d["candidates"] or log.settings("home_feed", d["config_version"])["arms"]
        for arm in offered:
            position = shown.get((d["decision_id"], arm))
            c = counts[arm]
            c[0] += 1
            c[1] += position is not None
            c[2] += position == 0
    return [
        {"arm": arm, "offered": c[0], "shown": c[1], "top": c[2]}
        for arm, c in sorted(counts.items())
    ]


def answer_10(log):
    groups = defaultdict(list)
    for o in home(outcomes_of(log)):
        if o["position"] == 0:
            groups[(o["holdout"], o["arm"])].append(o["propensity"])
    return [
        {
            "holdout": holdout,
            "arm": arm,
            "n": len(p),
            "min_propensity": min(p),
            "p05_propensity": percentile_cont(p, 0.05),
            "below_0_05": sum(x < 0.05 for x in p),
        }
        for (holdout, arm), p in sorted(groups.items())
    ]


def answer_11(log):
    top = [o for o in home(outcomes_of(log)) if o["position"] == 0 and o["reward"] is not None]
    bandit = [o for o in top if not o["holdout"]]
    weights = [1 / (n_candidates(log, o) * o["propensity"]) for o in bandit]
    return [
        {
            "bandit_mean": mean(o["reward"] for o in bandit),
            "holdout_mean": mean(o["reward"] for o in top if o["holdout"]),
            "holdout_ips": mean(w * o["reward"] for w, o in zip(weights, bandit)),
            "holdout_snips": sum(w * o["reward"] for w, o in zip(weights, bandit)) / sum(weights),
            "bandit_n": len(bandit),
            "holdout_n": len(top) - len(bandit),
        }
    ]


def answer_12(log):
    daily = {
        (r["day"], r["holdout"]): r["decisions"]
        for r in experiment_daily_of(log)
        if r["experiment"] == "home_feed"
    }
    return [
        {
            "day": c["day"],
            "holdout": c["holdout"],
            "impressions": c["impressions"],
            "top_impressions": c["top_impressions"],
            "decisions": daily[(c["day"], c["holdout"])],
            "top_share": c["top_impressions"] / daily[(c["day"], c["holdout"])],
            "mean_reward": c["mean_reward"],
        }
        for c in sorted(
            (c for c in arm_daily_of(log) if c["experiment"] == "home_feed" and c["arm"] == "d"),
            key=lambda c: (c["day"], c["holdout"]),
        )
    ]


def answer_13(log):
    now = datetime.now(timezone.utc)
    window = {
        v: log.settings("home_feed", v)["reward"]["window_seconds"] for v in ("hf_v1", "hf_v2")
    }
    closes = [
        o["decided_at"] + timedelta(seconds=window[o["config_version"]])
        for o in home(outcomes_of(log))
        if o["reward"] is None
    ]
    assert len(closes) == 5  # known: 2 arms of the decision at 23:58, 3 of the last minute
    return [
        {
            "experiment": "home_feed",
            "waiting": 5,
            "overdue": 2,
            "next_window_closes_at": min(c for c in closes if c >= now),
        }
    ]


def answer_14(log):
    units = defaultdict(list)
    for d in log.decisions:
        if d["experiment"] == "home_feed" and d["unit_id"]:
            units[d["unit_id"]].append(d["policy"] == "holdout")
    histogram = defaultdict(int)
    for groups in units.values():
        histogram[len(groups)] += 1
    return [
        {"decisions": n, "units": count, "in_both_groups": 0}
        for n, count in sorted(histogram.items())
    ]


def answer_15(log):
    decision = next(d for d in log.decisions if d["decision_id"] == "home_feed:0000")
    spec = FeatureSpec.from_mapping(["hour"], {"city": ["berlin", "hamburg"]})
    return [
        {"position": p, "label": label, "value": value}
        for p, (label, value) in enumerate(zip(spec.columns, spec.encode(decision["context"])))
    ]


ANSWERS = {
    int(name.split("_")[1]): f for name, f in globals().items() if name.startswith("answer_")
}


def test_the_document_has_at_least_12_questions_each_with_a_checked_answer():
    assert len(questions()) >= 12
    assert set(questions()) == set(ANSWERS)


@pytest.mark.parametrize("number", sorted(questions()))
def test_the_documented_query_gives_the_known_answer(engine, log, number):
    title, sql = questions()[number]
    actual = rows(engine, sql)
    expected = ANSWERS[number](log)
    assert expected, f"question {number} ({title}) has no rows to check"
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        assert set(a) <= set(e), f"question {number} returns columns the test does not check"
        for key, value in a.items():
            assert approx(value, e[key]), (number, key, a, e)


# -- bench/synthetic_log.py -----------------------------------------------------------------


def test_the_synthetic_log_is_consistent(engine):
    summary = synthetic_log.seed(engine, impressions=6001, experiments=2, days=3, chunk=700)
    assert (summary.impressions, summary.experiments) == (6001, ("synthetic_0", "synthetic_1"))
    [counts] = rows(
        engine,
        "SELECT (SELECT count(*) FROM impressions) AS impressions,"
        " (SELECT sum(shown_count) FROM decisions) AS shown,"
        " (SELECT count(*) FROM decisions) AS decisions,"
        " (SELECT count(*) FROM rewards) AS rewards,"
        " (SELECT count(*) FROM outcomes) AS outcomes,"
        " (SELECT count(*) FROM decisions WHERE policy = 'holdout') AS holdout,"
        " (SELECT count(*) FROM pending_rewards) AS pending,"
        " (SELECT count(*) FROM rewards WHERE kind = 'late') AS late",
    )
    assert counts["impressions"] == counts["shown"] == counts["outcomes"] == 6001
    assert (counts["decisions"], counts["rewards"]) == (summary.decisions, summary.rewards)
    assert 0.05 < counts["holdout"] / counts["decisions"] < 0.15
    assert counts["pending"] > 0 and counts["late"] > 0
    # a unit stays in its group (per experiment); each impression has at most one final reward
    assert (
        rows(
            engine,
            "SELECT unit_id FROM decisions WHERE unit_id IS NOT NULL GROUP BY experiment, unit_id"
            " HAVING count(DISTINCT policy) > 1",
        )
        == []
    )
    assert (
        rows(
            engine,
            "SELECT decision_id, arm FROM rewards WHERE kind <> 'late' GROUP BY 1, 2"
            " HAVING count(*) > 1",
        )
        == []
    )
    # the worker's invariant: a late reward comes after the window closed with a default
    assert (
        rows(
            engine,
            "SELECT r.decision_id FROM rewards r LEFT JOIN rewards d ON d.decision_id ="
            " r.decision_id AND d.arm = r.arm AND d.kind = 'default' WHERE r.kind = 'late'"
            " AND (d.decision_id IS NULL OR r.received_at < d.received_at - interval '3 s')",
        )
        == []
    )
    # the features are bandits.features' encoding of the context
    spec = FeatureSpec.from_mapping(["hour"], {"city": list(synthetic_log.CITIES)})
    for d in rows(engine, "SELECT context, features FROM decisions LIMIT 50"):
        assert d["features"] == spec.encode(d["context"]).tolist()
