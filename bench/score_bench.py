"""What ``banditd score`` costs: seconds and peak memory for N contexts at d features, K arms.

Writes an experiments file (``linucb``, ``--arms`` arms, ``--dim`` - 1 numeric
features and the intercept), teaches a model of it offline (the estimator on
synthetic rewards, a few hundred per arm) and saves it to Redis as the worker
would (``REDIS_URL``, default db 8: use a db of your own), writes ``--rows``
contexts as Parquet and as JSON lines, then runs ``banditd score`` on each
as a subprocess. For each run: wall seconds, rows/s, the process's peak RSS
(``wait4``) and the load average when it started (the box may be shared)::

    .venv/bin/python -m bench.score_bench --rows 1000000 --dim 32 --arms 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from app.config import load_config
from app.model_store import ArmUpdate, ModelStore
from app.services import redis_client
from bandits.estimators import LinUCB

REPO = Path(__file__).resolve().parent.parent
CHUNK = 100_000


def config_text(dim: int, arms: int, epsilon: float) -> str:
    """An experiments file of one linucb experiment ``scored`` with ``dim - 1`` numeric features."""
    names = ", ".join(f'"f{i}"' for i in range(dim - 1))
    arm_ids = ", ".join(f'"arm{a}"' for a in range(arms))
    return (
        f'[experiments.scored]\npolicy = "linucb"\nalpha = 0.5\nepsilon = {epsilon}\n'
        f"arms = [{arm_ids}]\n[experiments.scored.features]\nnumeric = [{names}]\n"
    )


def teach(redis_url: str, config_path: Path, per_arm: int, seed: int) -> None:
    """Learn from synthetic rewards and save every arm to Redis, as the worker saves them."""
    exp = load_config(str(config_path)).get("scored")
    rng = np.random.default_rng(seed)
    n_arms, dim = len(exp.arms), exp.features.dim
    X = np.column_stack([np.ones(per_arm * n_arms), rng.normal(size=(per_arm * n_arms, dim - 1))])
    arms = np.repeat(np.arange(n_arms), per_arm)
    truth = rng.normal(size=(n_arms, dim)) * 0.2
    rewards = np.einsum("nd,nd->n", X, truth[arms]) + rng.normal(size=len(arms)) * 0.1
    model = LinUCB(n_arms=n_arms).fit(X, arms, rewards)
    client = redis_client(redis_url)
    client.flushdb()
    store = ModelStore(client)
    updates = []
    for a, arm in enumerate(exp.arms):
        one = {f: getattr(model.state, f)[a : a + 1] for f in ("A_inv", "theta", "n", "A", "b")}
        state = type(model.state)(
            successes=np.zeros(1), failures=np.zeros(1), **{k: v.copy() for k, v in one.items()}
        )
        updates.append(ArmUpdate(exp.model_id, arm, state, 1))
    store.save("scored", updates, b"1-0")
    client.close()


def write_inputs(rows: int, dim: int, out: Path, seed: int) -> tuple[Path, Path]:
    """``rows`` contexts with an ``id``, as Parquet and as JSON lines (floats to 6 digits)."""
    rng = np.random.default_rng(seed)
    parquet, jsonl = out / "contexts.parquet", out / "contexts.jsonl"
    names = [f"f{i}" for i in range(dim - 1)]
    schema = pa.schema([pa.field("id", pa.int64())] + [pa.field(n, pa.float64()) for n in names])
    with pq.ParquetWriter(parquet, schema) as pw, open(jsonl, "wb") as jw:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            values = np.round(rng.normal(size=(n, dim - 1)), 6)
            ids = np.arange(start, start + n)
            pw.write_batch(
                pa.RecordBatch.from_arrays(
                    [pa.array(ids)] + [pa.array(values[:, i]) for i in range(dim - 1)],
                    schema=schema,
                )
            )
            jw.write(
                b"".join(
                    orjson.dumps({"id": int(i), **dict(zip(names, row))}) + b"\n"
                    for i, row in zip(ids.tolist(), values.tolist())
                )
            )
    return parquet, jsonl


def run_score(env: dict, source: Path, output: Path, k: int) -> dict:
    """One ``banditd score`` subprocess: seconds, peak RSS, its summary."""
    load = os.getloadavg()[0]
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            str(REPO / ".venv/bin/banditd"),
            "score",
            "--experiment",
            "scored",
            "--input",
            str(source),
            "--output",
            str(output),
            "--k",
            str(k),
            "--seed",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
    )
    summary = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if status != 0:
        raise SystemExit(f"banditd score failed with status {status}")
    return {
        "input": source.name,
        "k": k,
        "wall_seconds": round(seconds, 2),
        "scoring_seconds": json.loads(summary)["seconds"],
        "rows_per_second": round(json.loads(summary)["rows"] / seconds),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "load_average_at_start": round(load, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=32, help="features with the intercept")
    parser.add_argument("--arms", type=int, default=50)
    parser.add_argument("--k", type=int, action="append", help="slate sizes (default 1)")
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--formats", default="parquet,jsonl")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://localhost:6379/8")
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="score_bench_") as tmp:
        out = Path(tmp)
        config = out / "experiments.toml"
        config.write_text(config_text(args.dim, args.arms, args.epsilon))
        teach(args.redis_url, config, per_arm=200, seed=7)
        started = time.monotonic()
        parquet, jsonl = write_inputs(args.rows, args.dim, out, seed=8)
        print(
            f"wrote {args.rows:,} contexts in {time.monotonic() - started:.1f} s", file=sys.stderr
        )
        env = {**os.environ, "BANDITD_CONFIG": str(config), "REDIS_URL": args.redis_url}
        inputs = {"parquet": parquet, "jsonl": jsonl}
        for fmt in args.formats.split(","):
            for k in args.k or [1]:
                result = run_score(env, inputs[fmt], out / f"scored.{fmt}", k)
                result |= {"rows": args.rows, "dim": args.dim, "arms": args.arms}
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
