"""``banditd score``: a file of contexts ranked by the live model (or a snapshot), as /choose ranks.

The command runs as a subprocess (the installed ``banditd``) against the test
Redis and database, on a model the worker learned from rewards sent through
the API.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app import create_app
from app.snapshots import take_snapshot
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, choose, reward, rows
from tests.test_estimators import taught

BANDITD = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "banditd"
CONTEXTS = [
    {"id": "a", "hour": 9, "city": "berlin"},
    {"id": "b", "hour": 23, "city": "hamburg"},
    {"id": "c", "context": {"hour": 4, "city": "berlin"}},
    {"id": "d", "city": "munich"},  # a city not declared: no category
    {"id": "e"},
]


def score(config_file: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``banditd score --experiment home_feed ARGS``; stdout and stderr captured."""
    env = {
        **os.environ,
        "BANDITD_CONFIG": str(config_file),
        "REDIS_URL": TEST_REDIS_URL,
        "DATABASE_URL": TEST_DATABASE_URL,
    }
    return subprocess.run(
        [str(BANDITD), "score", "--experiment", "home_feed", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def redis_state(client) -> dict:
    """Every key, with its stream length for streams."""
    return {k: client.xlen(k) if client.type(k) == b"stream" else None for k in client.keys()}


def context_of(row: dict) -> dict:
    skip = {"id", "arms", "scores", "propensities", "decision_id"}
    return {k: v for k, v in row.get("context", row).items() if k not in skip}


def test_scored_rows_rank_as_choose_does_on_the_live_model(
    client, settings, worker, config_file, tmp_path, redis_client
):
    taught(client, worker)
    before = redis_state(redis_client)
    source = write_jsonl(tmp_path / "in.jsonl", CONTEXTS)
    done = score(config_file, "--input", str(source), "--output", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["rows"], summary["model"]) == (len(CONTEXTS), "live")
    assert "100.0%" in done.stderr  # the progress bar's last line
    after = redis_state(redis_client)  # nothing recorded, nothing learned (leases may lapse)
    assert set(after) <= set(before) and {k: before[k] for k in after} == after

    scored = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in scored] == [r["id"] for r in CONTEXTS]
    assert all({k: v for k, v in r.items() if k in c} == c for r, c in zip(scored, CONTEXTS))
    fresh = create_app(settings)  # the same live parameters, epsilon 0: no draw decides
    for row in scored:
        answer = choose(fresh.test_client(), context=context_of(row), k=1).get_json()
        assert row["arms"] == [a["arm"] for a in answer["arms"]]
        assert row["propensities"] == [a["propensity"] for a in answer["arms"]]
        assert row["scores"] == pytest.approx([a["score"] for a in answer["arms"]], rel=1e-12)


def test_parquet_in_parquet_out_with_a_ranked_slate(
    client, worker, config_file, tmp_path, redis_client
):
    taught(client, worker)
    flat = [{k: v for k, v in c.items() if k != "context"} for c in CONTEXTS[:2]]
    table = pa.Table.from_pylist(flat * 3000)  # several Parquet batches
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=1000)
    done = score(
        config_file,
        "--input",
        str(tmp_path / "in.parquet"),
        "--output",
        str(tmp_path / "out.parquet"),
        "--k",
        "3",
    )
    assert done.returncode == 0, done.stderr
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.num_rows == 6000
    assert out.column_names == ["id", "hour", "city", "arms", "scores", "propensities"]
    assert out.column("id").to_pylist() == table.column("id").to_pylist()
    arms = out.column("arms").to_pylist()
    assert all(sorted(a) == ["job_cleaning", "job_kitchen", "job_warehouse"] for a in arms)
    assert arms[0::2] == [arms[0]] * 3000 and arms[1::2] == [arms[1]] * 3000
    scores = np.array(out.column("scores").to_pylist())
    assert (np.diff(scores, axis=1) <= 0).all()  # best first

    write_jsonl(tmp_path / "same.jsonl", flat)
    done = score(
        config_file, "--input", str(tmp_path / "same.jsonl"), "--output", str(tmp_path / "o.jsonl")
    )
    as_json = read_jsonl(tmp_path / "o.jsonl")
    assert [r["arms"][0] for r in as_json] == [arms[0][0], arms[1][0]]


def test_a_snapshot_scores_like_the_live_model_it_copied(
    client, worker, config_file, tmp_path, redis_client, engine
):
    source = write_jsonl(tmp_path / "in.jsonl", CONTEXTS)
    missing = score(
        config_file, "--input", str(source), "--output", str(tmp_path / "o"), "--model", "snapshot"
    )
    assert missing.returncode == 2 and "no model snapshot" in missing.stderr

    taught(client, worker)
    assert take_snapshot(redis_client, engine, "home_feed", 0) is not None
    runs = {}
    for model in ("live", "snapshot"):
        out = tmp_path / f"{model}.jsonl"
        done = score(config_file, "--input", str(source), "--output", str(out), "--model", model)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["model"] == model
        runs[model] = read_jsonl(out)
    assert runs["snapshot"] == runs["live"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"hour": 1}, {"hour": "nine"}], "lines 1-2"),
        ([{"context": {"hour": 1.5}}, {"context": {"hour": True}}], "lines 1-2"),
        (["[1, 2]"], "lines 1-1"),
    ],
)
def test_bad_contexts_are_refused_with_where(config_file, tmp_path, redis_client, rows, message):
    path = tmp_path / "in.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    done = score(config_file, "--input", str(path), "--output", str(tmp_path / "o.jsonl"))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_parquet_column_of_the_wrong_type_names_the_feature(config_file, tmp_path, redis_client):
    pq.write_table(pa.table({"hour": ["nine"]}), tmp_path / "in.parquet")
    done = score(
        config_file, "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o.pq")
    )
    assert done.returncode == 2
    assert "context.hour: must be a number" in done.stderr and "rows 0-0" in done.stderr


def test_an_input_that_is_not_parquet_is_refused_in_one_line(config_file, tmp_path, redis_client):
    source = tmp_path / "in.parquet"
    source.write_text('{"hour": 9}\n')  # JSON lines under a Parquet name
    done = score(config_file, "--input", str(source), "--output", str(tmp_path / "o.pq"))
    assert done.returncode == 2
    assert "in.parquet: not a Parquet file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiment", "nope"], "no experiment named 'nope'"),
        (["--k", "4"], "--k must be between 1 and 3"),
        (["--candidates", "job_kitchen,job_moon"], "'job_moon' is not an arm"),
    ],
)
def test_bad_arguments_are_refused(config_file, tmp_path, redis_client, args, message):
    source = write_jsonl(tmp_path / "in.jsonl", CONTEXTS)
    done = score(config_file, "--input", str(source), "--output", str(tmp_path / "o"), *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_recorded_rows_are_logged_decisions_that_take_rewards(
    client, worker, config_file, tmp_path, redis_client, engine
):
    taught(client, worker)
    source = write_jsonl(tmp_path / "in.jsonl", CONTEXTS[:3])
    out = tmp_path / "out.jsonl"
    done = score(config_file, "--input", str(source), "--output", str(out), "--k", "2", "--record")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["recorded"] == 3
    scored = read_jsonl(out)
    worker.run(until_idle=True)

    for row in scored:
        logged = rows(
            engine,
            "SELECT i.arm, i.score, i.propensity, d.context, d.policy FROM impressions i "
            "JOIN decisions d USING (decision_id) WHERE decision_id = :d ORDER BY i.position",
            d=row["decision_id"],
        )
        assert [r["arm"] for r in logged] == row["arms"]
        assert [r["propensity"] for r in logged] == row["propensities"]
        assert [r["score"] for r in logged] == row["scores"]
        assert logged[0]["policy"] == "linucb"
        assert logged[0]["context"] == {
            k: float(v) if k == "hour" else v for k, v in context_of(row).items()
        }
    first = scored[0]
    answer = reward(client, first["decision_id"], first["arms"][1], 1.0)
    assert answer.status_code == 202 and answer.get_json()["status"] == "accepted"


def test_candidates_restrict_the_ranking(
    client, settings, worker, config_file, tmp_path, redis_client
):
    taught(client, worker)
    source = write_jsonl(tmp_path / "in.jsonl", CONTEXTS)
    out = tmp_path / "out.jsonl"
    only = ("job_warehouse", "job_cleaning")
    done = score(
        config_file, "--input", str(source), "--output", str(out), "--candidates", ",".join(only)
    )
    assert done.returncode == 0, done.stderr
    fresh = create_app(settings).test_client()
    for row in read_jsonl(out):
        answer = choose(fresh, context=context_of(row), candidates=list(only)).get_json()
        assert row["arms"] == [answer["arms"][0]["arm"]] and row["arms"][0] in only
        assert row["propensities"] == [answer["arms"][0]["propensity"]]


SEGMENTED_TOML = """
[experiments.home_feed]
policy = "linucb"
alpha = 1.0
arms = ["job_cleaning", "job_kitchen", "job_warehouse"]
segment_by = "store"

[experiments.home_feed.features]
numeric = ["hour"]
categorical = { city = ["berlin", "hamburg"] }
"""


def test_a_segment_is_scored_with_its_own_model(settings, config_file, tmp_path, engine):
    from app.services import build_services
    from app.worker import Worker

    config_file.write_text(SEGMENTED_TOML)
    api = create_app(settings).test_client()
    for i in range(40):  # store s1 learns that kitchen jobs pay; s2 learns nothing
        context = {"store": "s1", "hour": i % 24, "city": "berlin"}
        decision = choose(api, context=context).get_json()
        arm = decision["arms"][0]["arm"]
        assert reward(api, decision["decision_id"], arm, float(arm == "job_kitchen")).status_code
    worker = Worker.from_services(build_services(settings), block_ms=10)
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()

    source = write_jsonl(tmp_path / "in.jsonl", [{"hour": h, "city": "berlin"} for h in (3, 9)])
    whole = score(config_file, "--input", str(source), "--output", str(tmp_path / "o.jsonl"))
    assert whole.returncode == 2 and "model per 'store'" in whole.stderr
    out = {}
    for store in ("s1", "s2"):
        out[store] = tmp_path / f"{store}.jsonl"
        done = score(
            config_file, "--input", str(source), "--output", str(out[store]), "--segment", store
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["segment"] == store
    for store in ("s1", "s2"):
        for row in read_jsonl(out[store]):
            context = {"store": store, **context_of(row)}
            answer = choose(api, context=context).get_json()
            if store == "s1":  # s2's arms tie: each draw picks its own
                assert row["arms"] == [answer["arms"][0]["arm"]]
            assert row["scores"] == pytest.approx([answer["arms"][0]["score"]], rel=1e-12)
            assert row["propensities"] == [answer["arms"][0]["propensity"]]
    assert {r["arms"][0] for r in read_jsonl(out["s1"])} == {"job_kitchen"}
    assert read_jsonl(out["s2"])[0]["propensities"] == [1 / 3]  # the prior: all three tie

    # without --segment each row takes its own segment's model, named flat or in its context
    mixed = [
        {"store": "s1", "hour": 3, "city": "berlin"},
        {"context": {"store": "s2", "hour": 9, "city": "berlin"}},
        {"store": 1, "hour": 9},  # a whole number is the segment of its digits
    ]
    for fmt in ("jsonl", "parquet"):
        source_mixed = tmp_path / f"mixed.{fmt}"
        if fmt == "jsonl":
            write_jsonl(source_mixed, mixed)
        else:
            pq.write_table(
                pa.Table.from_pylist(
                    [{**r, "store": str(r["store"])} for r in [mixed[0], mixed[2]]]
                ),
                source_mixed,
            )
        done = score(
            config_file, "--input", str(source_mixed), "--output", str(tmp_path / f"m.{fmt}")
        )
        assert done.returncode == 0, done.stderr
    by_row = read_jsonl(tmp_path / "m.jsonl")
    assert json.loads(done.stdout)["segments"] == 2
    assert by_row[0]["scores"] == pytest.approx(read_jsonl(out["s1"])[0]["scores"], rel=1e-12)
    assert by_row[1]["propensities"] == [1 / 3] and by_row[2]["propensities"] == [1 / 3]
    from_parquet = pq.read_table(tmp_path / "m.parquet").column("scores").to_pylist()
    assert from_parquet[0] == pytest.approx(by_row[0]["scores"], rel=1e-12)

    recorded = tmp_path / "rec.jsonl"
    done = score(
        config_file,
        "--input",
        str(source),
        "--output",
        str(recorded),
        "--segment",
        "s1",
        "--record",
    )
    assert done.returncode == 0, done.stderr
    worker = Worker.from_services(build_services(settings), block_ms=10)
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
    ids = [r["decision_id"] for r in read_jsonl(recorded)]
    logged = rows(
        engine,
        "SELECT model_id, context FROM decisions WHERE decision_id = ANY(:ids)",
        ids=ids,
    )
    assert len(logged) == 2 and all(r["model_id"].endswith("~s1") for r in logged)
    assert all(r["context"]["store"] == "s1" for r in logged)


def test_recorded_rows_of_segments_are_logged_under_their_segments(
    settings, config_file, tmp_path, engine
):
    from app.services import build_services
    from app.worker import Worker

    config_file.write_text(SEGMENTED_TOML)
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"store": "s1", "hour": 3}, {"context": {"store": "s2", "hour": 4}}, {"store": 7}],
    )
    out = tmp_path / "out.jsonl"
    done = score(config_file, "--input", str(source), "--output", str(out), "--record")
    assert done.returncode == 0, done.stderr
    worker = Worker.from_services(build_services(settings), block_ms=10)
    try:
        worker.run(until_idle=True)
    finally:
        worker.close()
    for row, store in zip(read_jsonl(out), ("s1", "s2", "7")):
        logged = rows(
            engine,
            "SELECT model_id, context FROM decisions WHERE decision_id = :d",
            d=row["decision_id"],
        )
        assert logged[0]["model_id"].endswith("~" + store)
        assert str(logged[0]["context"]["store"]) == store
