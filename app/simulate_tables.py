"""The Markdown tables ``banditd simulate`` prints: async/sync ratios, the
targets of issue 5 (banditd against the best peer, forgetting on drift), and
the off-policy evaluation checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from bandits import PolicyParams
from bandits.simulation import ope_study
from bandits.simulation.runner import RunResult


def ratio_table(pairs: list[tuple[RunResult, RunResult]]) -> str:
    """Markdown: HTTP/async mean reward over in-process/sync, per seed, mean ± sd."""
    lines = [
        "| environment | policy | sync (in-process) | async (HTTP) | ratio per seed, mean ± sd "
        "| ratio of means | HTTP rounds/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for sync, remote in pairs:
        per_seed = remote.mean_reward / sync.mean_reward
        lines.append(
            f"| {sync.environment} | {sync.agent.replace(' in-process, sync', '')} "
            f"| {sync.mean_reward.mean():.4f} ± {_sd(sync.mean_reward):.4f} "
            f"| {remote.mean_reward.mean():.4f} ± {_sd(remote.mean_reward):.4f} "
            f"| {per_seed.mean():.3f} ± {_sd(per_seed):.3f} "
            f"| {remote.mean_reward.mean() / sync.mean_reward.mean():.3f} "
            f"| {remote.rounds_per_second:,.0f} |"
        )
    return "\n".join(lines)


def _sd(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def coverage_table(seeds: int, logging: ope_study.Target | None = None) -> str:
    """Markdown table of the OPE coverage check, logged by ``logging`` (default lin_ts v=0.5)."""
    logging = logging or ope_study.LOGGING
    targets = (*ope_study.TARGETS, ope_study.Target("squarecb γ₀=10", "squarecb", PolicyParams()))
    cov = ope_study.coverage(range(seeds), n=1000, logging=logging, targets=targets)
    how = "by quadrature" if logging.policy == "lin_ts" else "as bandits.select reports them"
    lines = [
        f"Coverage of 95% intervals over {seeds} seeds of 1,000 logged decisions "
        f"(logging: {logging.name}, propensities {how}):",
        "",
        "| target | true value | IPS | SNIPS | DR | mean width IPS / SNIPS / DR | mean ESS |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in cov.items():
        lines.append(
            f"| {name} | {row['truth']:.4f} | {row['ips']:.0%} | {row['snips']:.0%} "
            f"| {row['dr']:.0%} | {row['ips_width']:.4f} / {row['snips_width']:.4f} / "
            f"{row['dr_width']:.4f} | {row['ess']:.0f} |"
        )
    return "\n".join(lines)


def propensity_table() -> str:
    """Markdown table of the error of Thompson-sampling propensities."""
    problem = ope_study.problem()
    lines = [
        "Error of lin_ts's logged propensities (v=0.5, epsilon 0) against quadrature, "
        "2,000 contexts:",
        "",
        "| propensity_draws | mean abs error | a Monte Carlo estimate's (for comparison) "
        "| median rel. error | p99 rel. error | mean IPS weight error | at the 0.5/draws floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for draws in (100, 1000, 10000):
        e = ope_study.ts_propensity_error(draws, p=problem)
        lines.append(
            f"| {draws:,} | {e['mean_abs']:.4f} | {e['binomial_mean_abs']:.4f} "
            f"| {e['p50_rel']:.2%} | {e['p99_rel']:.2%} | {e['weight_bias']:+.2%} "
            f"| {e['clipped']:.2%} |"
        )
    return "\n".join(lines)


def targets_table(results: list[dict[str, Any]]) -> str:
    """Markdown: banditd's best against the best peer per environment, paired by seed.

    ``results`` are :func:`per_seed` dicts (also as read back from ``--results``).
    On ``drifting`` it also compares, over the second half, banditd's best
    forgetting policy with every stationary peer. A difference is banditd
    minus the peer, per seed (the seeds share their episodes), mean ± sd.
    """
    lines = [
        "| environment | measure | banditd | peer | difference per seed, mean ± sd | seeds won |",
        "|---|---|---|---|---|---|",
    ]

    def row(env: str, measure: str, ours: dict, theirs: dict) -> None:
        lines.append(_paired_row(env, measure, ours, theirs, ratio=False))

    for env in dict.fromkeys(r["environment"] for r in results):
        here = [r for r in results if r["environment"] == env]
        ours = [r for r in here if r["agent"].startswith("banditd")]
        peers = [r for r in here if not r["agent"].startswith("banditd")]
        if not ours or not peers:
            continue
        best = max(ours, key=lambda r: r["mean_reward"])
        row(env, "mean_reward", best, max(peers, key=lambda r: r["mean_reward"]))
        forgetting = [r for r in ours if "γ=" in r["agent"]]
        if env == "drifting" and forgetting:
            best = max(forgetting, key=lambda r: r["second_half"])
            for peer in sorted(peers, key=lambda r: -r["second_half"]):
                row(env, "second_half", best, peer)
    return "\n".join(lines)


def _paired_row(env: str, measure: str, ours: dict, theirs: dict, *, ratio: bool) -> str:
    """One Markdown row comparing two results seed by seed (the seeds share their episodes)."""
    a = np.array(ours["per_seed"][measure])
    b = np.array(theirs["per_seed"][measure])
    d = a - b
    ratio_cell = f" {a.mean() / b.mean():.3f} |" if ratio else ""
    return (
        f"| {env} | {measure.replace('_', ' ')} | {ours['agent']} ({a.mean():.4f}) "
        f"| {theirs['agent']} ({b.mean():.4f}) |{ratio_cell} {d.mean():+.4f} ± {_sd(d):.4f} "
        f"| {int((d > 0).sum())} of {d.size} |"
    )


def exploration_table(results: list[dict[str, Any]]) -> str:
    """Markdown: the targets of issue 18, paired by seed.

    Per environment: banditd's best ``squarecb`` against Vowpal Wabbit's best
    ``--squarecb`` and against banditd's best stationary LinUCB / linear TS
    (mean reward); and each policy with ``forgetting = "auto"`` against the same
    policy without forgetting and with its best fixed factor (the second half on
    ``drifting``, the whole run elsewhere). A ratio is of the means over seeds;
    a difference is A minus B per seed, mean ± sd.
    """
    lines = [
        "| environment | measure | A | B | A / B | difference per seed, mean ± sd | seeds won |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(env: str, measure: str, ours: dict, theirs: dict) -> None:
        lines.append(_paired_row(env, measure, ours, theirs, ratio=True))

    def best(rows: list[dict], measure: str = "mean_reward") -> dict | None:
        return max(rows, key=lambda r: r[measure]) if rows else None

    for env in dict.fromkeys(r["environment"] for r in results):
        here = [r for r in results if r["environment"] == env]
        named = {r["agent"]: r for r in here}
        stationary = [r for r in here if "γ=" not in r["agent"]]
        squarecb = best([r for r in stationary if r["agent"].startswith("banditd squarecb")])
        vw = best([r for r in here if r["agent"].startswith("VW squarecb")])
        linear = best(
            [r for r in stationary if r["agent"].startswith(("banditd linucb", "banditd lin_ts"))]
        )
        for other in (vw, linear):
            if squarecb and other:
                row(env, "mean_reward", squarecb, other)
        measure = "second_half" if env == "drifting" else "mean_reward"
        for auto in [r for r in here if r["agent"].endswith(" γ=auto")]:
            base = auto["agent"].removesuffix(" γ=auto")
            if base in named:
                row(env, measure, auto, named[base])
            fixed = best([r for n, r in named.items() if n.startswith(base + " γ=0")], measure)
            if fixed:
                row(env, measure, auto, fixed)
    return "\n".join(lines)


def service_peers_table(remote: list[dict[str, Any]], peers: list[dict[str, Any]]) -> str:
    """Markdown: each policy played through the service against the best peer in process.

    ``remote`` and ``peers`` are :func:`per_seed` dicts of the same episodes
    (environments, seeds and rounds). Per environment, each remote result is
    paired with the peer of the highest mean reward, and on ``drifting`` also
    with the peer of the best second half. A ratio is of the means over seeds;
    a difference is A minus B per seed, mean ± sd.
    """
    lines = [
        "| environment | measure | A (through the service) | B (peer, in process) | A / B "
        "| difference per seed, mean ± sd | seeds won |",
        "|---|---|---|---|---|---|---|",
    ]
    for env in dict.fromkeys(r["environment"] for r in remote):
        theirs = [r for r in peers if r["environment"] == env]
        if not theirs:
            continue
        measures = ("mean_reward", "second_half") if env == "drifting" else ("mean_reward",)
        for measure in measures:
            peer = max(theirs, key=lambda r: r[measure])
            for ours in (r for r in remote if r["environment"] == env):
                lines.append(_paired_row(env, measure, ours, peer, ratio=True))
    return "\n".join(lines)
