"""The benchmark's experiments and request bodies.

``bench/experiments.toml`` holds the K = 50, d = 32 experiments every
throughput and latency figure uses (one per policy: linucb, lin_ts, squarecb).
The cost-growth grid (1,000 arms at d = 8, 32, 64, per policy) and the
10,000-arm memory experiment are written here into
``bench/out/`` at run time: their arm lists are too long to keep by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from app.config import Experiment, load_config

BENCH_DIR = Path(__file__).absolute().parent
MAIN_CONFIG = BENCH_DIR / "experiments.toml"
MAIN_EXPERIMENTS = ("bench_linucb", "bench_lin_ts", "bench_squarecb")
CATEGORY_VALUES = ("a", "b", "c", "d")

GRID_ARMS = 1000
GRID_DIMS = (8, 32, 64)
GRID_CANDIDATES = (10, 50, 200, 1000)
GRID_POLICIES = ("linucb", "lin_ts")
MEMORY_ARMS = 10_000
MEMORY_DIM = 32


def layout(dim: int) -> tuple[int, int]:
    """(numeric features, categorical features of 4 values) that, with the intercept, make ``dim``.

    d = 8 is 1 + 3 + 1·4, d = 32 is 1 + 23 + 2·4, d = 64 is 1 + 47 + 4·4.
    """
    n_cat = {8: 1, 32: 2, 64: 4}.get(dim, 1)
    n_num = dim - 1 - len(CATEGORY_VALUES) * n_cat
    if n_num < 0:
        raise ValueError(f"no layout for d={dim}")
    return n_num, n_cat


def _list(items: list[str]) -> str:
    rows = [", ".join(f'"{s}"' for s in items[i : i + 10]) for i in range(0, len(items), 10)]
    return "[\n" + "".join(f"    {r},\n" for r in rows) + "]"


def experiment_toml(name: str, policy: str, n_arms: int, dim: int) -> str:
    """One ``[experiments.NAME]`` table with ``n_arms`` arms and ``dim`` features."""
    n_num, n_cat = layout(dim)
    values = ", ".join(f'"{v}"' for v in CATEGORY_VALUES)
    categorical = ", ".join(f"c{j} = [{values}]" for j in range(n_cat))
    return (
        f"[experiments.{name}]\n"
        f'policy = "{policy}"\n'
        "epsilon = 0.05\n"
        f"arms = {_list([f'arm{i:05d}' for i in range(n_arms)])}\n"
        "reward = { default = 0.0, window_seconds = 900, min = 0.0, max = 1.0 }\n\n"
        f"[experiments.{name}.features]\n"
        f"numeric = {_list([f'f{i:02d}' for i in range(n_num)])}\n"
        f"categorical = {{ {categorical} }}\n\n"
    )


def grid_name(policy: str, dim: int) -> str:
    """The grid experiment of ``policy`` at ``dim`` features."""
    return f"grid_{policy}_d{dim}"


def write_grid_config(out_dir: Path) -> Path:
    """Write the cost-growth experiments (GRID_ARMS arms each) and return the file."""
    path = out_dir / "grid.toml"
    path.write_text(
        "".join(
            experiment_toml(grid_name(p, d), p, GRID_ARMS, d)
            for p in GRID_POLICIES
            for d in GRID_DIMS
        )
    )
    return path


def write_memory_config(out_dir: Path) -> Path:
    """Write the 10,000-arm, d = 32 experiment and return the file."""
    path = out_dir / "memory.toml"
    path.write_text(experiment_toml("mem_linucb", "linucb", MEMORY_ARMS, MEMORY_DIM))
    return path


def experiments(path: Path) -> dict[str, Experiment]:
    """The experiments of a config file, by name."""
    return load_config(str(path)).experiments


def context(exp: Experiment, rng: np.random.Generator) -> dict[str, Any]:
    """A full context for ``exp``: every numeric feature and one value per categorical one."""
    ctx: dict[str, Any] = {
        name: round(float(v), 4)
        for name, v in zip(exp.features.numeric, rng.normal(size=len(exp.features.numeric)))
    }
    for name, values in exp.features.categorical:
        ctx[name] = values[int(rng.integers(len(values)))]
    return ctx


def choose_bodies(
    exp: Experiment,
    rng: np.random.Generator,
    n: int = 64,
    *,
    candidates: int | None = None,
) -> list[bytes]:
    """``n`` distinct /choose bodies (k = 1); with ``candidates``, a random subset of that size."""
    bodies = []
    for _ in range(n):
        body: dict[str, Any] = {"experiment": exp.name, "context": context(exp, rng), "k": 1}
        if candidates is not None:
            picked = rng.choice(len(exp.arms), size=candidates, replace=False)
            body["candidates"] = [exp.arms[i] for i in picked]
        bodies.append(orjson.dumps(body))
    return bodies
