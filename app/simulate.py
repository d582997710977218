"""``banditd simulate``: the simulation suite, in-process or through a running banditd.

In-process (the default) it runs :mod:`bandits.simulation`'s suite: banditd's
policies and the installed peers on every environment, with mean reward ±
standard deviation over seeds, regret and rounds per second.

With ``--url`` it plays the same episodes through a running service instead:
``POST /choose`` for each round and ``POST /reward`` for the chosen arm, while
``banditd worker`` applies the rewards asynchronously; and, for the ratio, the
same policy in-process, learning each reward before the next round (with
``--peers``, also the named peer libraries in process on the same episodes,
each policy through the service paired with the best of them). The
service needs one experiment per environment, policy and seed (a fresh model
each); ``--print-config`` prints them as TOML for ``BANDITD_CONFIG``
(:mod:`app.simulate_service` plays them).

``--study ope`` and ``--study propensity`` print the off-policy evaluation
checks of :mod:`bandits.simulation.ope_study` instead, and ``--study items``
the item models' study on short-lived items (:mod:`app.item_models.study`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from typing import Any

from app.cli_args import whole
from app.item_models import study as items_study
from app.settings import Settings
from app.simulate_service import (
    DEFAULT_HTTP_POLICIES,
    HttpTransport,
    PolicySpec,
    compare_through_service,
    experiments_toml,
    run_peers,
    split_url,
)
from app.simulate_tables import (
    coverage_table,
    exploration_table,
    propensity_table,
    ratio_table,
    service_peers_table,
    targets_table,
)
from bandits.simulation import ope_study
from bandits.simulation.environments import ENVIRONMENTS
from bandits.simulation.item_world import ItemWorld
from bandits.simulation.peers import available
from bandits.simulation.runner import RunResult, markdown_table
from bandits.simulation.suite import SIZES, run_suite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``banditd simulate``'s options on ``parser``."""
    parser.add_argument("--suite", choices=sorted(SIZES), default="quick", help="run size")
    parser.add_argument(
        "--env",
        action="append",
        choices=sorted(ENVIRONMENTS),
        help="environment (repeatable; default: all)",
    )
    parser.add_argument("--rounds", type=whole(1), help="rounds per seed (overrides the suite)")
    parser.add_argument("--seeds", type=whole(1), help="number of seeds (overrides the suite)")
    parser.add_argument("--no-peers", action="store_true", help="banditd's policies only")
    parser.add_argument(
        "--peers",
        help="comma-separated peer libraries to run (vw, mabwiser; default: every installed "
        "one); with --url: only those named, in process on the same episodes, each policy "
        "through the service compared with the best of them",
    )
    parser.add_argument("--url", help="play through the banditd service at this URL")
    parser.add_argument("--api-key", help="bearer key for --url (default: BANDITD_API_KEYS' first)")
    parser.add_argument(
        "--policy",
        action="append",
        help="with --url: POLICY[:knob=value,...] to compare (repeatable; default: "
        + ", ".join(DEFAULT_HTTP_POLICIES)
        + "); knobs alpha, epsilon, v, draws, gamma_scale, gamma_exponent, forgetting "
        "(a number or auto); with --study ope: the logging policy",
    )
    parser.add_argument("--prefix", default="sim_", help="with --url: experiment name prefix")
    parser.add_argument(
        "--print-config", action="store_true", help="print the experiments --url needs, then exit"
    )
    parser.add_argument(
        "--study",
        choices=("ope", "propensity", "items"),
        help="run an OPE check, or the short-lived items study (item models), instead",
    )
    parser.add_argument("--output", help="also write the Markdown tables to this file")
    parser.add_argument(
        "--results", help="also write every result, with its per-seed figures, to this JSON file"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``banditd simulate``; returns the process exit code."""
    size = SIZES[args.suite]
    env_names = args.env or sorted(ENVIRONMENTS)
    if not args.env and importlib.util.find_spec("sklearn") is None:
        env_names.remove("digits")
        print("banditd simulate: no scikit-learn (eval extra): skipping digits", file=sys.stderr)
    seeds = tuple(range(args.seeds)) if args.seeds else size.seeds
    rounds = {name: args.rounds or size.rounds[name] for name in env_names}
    started = time.perf_counter()

    def progress(result: RunResult) -> None:
        print(markdown_table([result]).splitlines()[-1], file=sys.stderr, flush=True)

    try:
        specs = [PolicySpec.parse(p) for p in (args.policy or DEFAULT_HTTP_POLICIES)]
        installed = _named_peers(args.peers) if args.peers else None
        if args.url:
            split_url(args.url)
    except ValueError as exc:
        print(f"banditd simulate: {exc}", file=sys.stderr)
        return 2
    if args.study == "items":
        return run_items(args, settings, seeds, started)
    envs = [ENVIRONMENTS[name]() for name in env_names]
    if args.print_config:
        print(experiments_toml(args.prefix, envs, specs, seeds), end="")
        return 0
    results: list[RunResult] = []
    if args.study == "ope":
        logging = None
        if args.policy:  # the first --policy logs the decisions
            logging = ope_study.Target(specs[0].label, specs[0].policy, specs[0].params)
        text = coverage_table(args.seeds or 200, logging)
    elif args.study == "propensity":
        text = propensity_table()
    elif args.url:
        key = args.api_key or next(iter(sorted(settings.api_keys)), "")
        transport = HttpTransport(args.url, key)
        try:
            pairs = compare_through_service(
                transport, envs, specs, rounds, seeds, args.prefix, progress
            )
        except RuntimeError as exc:
            print(f"banditd simulate: {exc}", file=sys.stderr)
            print(
                "(does BANDITD_CONFIG include `banditd simulate --print-config`?)", file=sys.stderr
            )
            return 1
        finally:
            transport.close()
        results = [r for pair in pairs for r in pair]
        text = markdown_table(results) + "\n\n" + ratio_table(pairs)
        if transport.retries:
            text += f"\n\n{transport.retries} request(s) were retried after a timeout."
        if args.peers:
            peers = run_peers(envs, rounds, seeds, installed, progress)
            results += peers
            text += "\n\n" + markdown_table(peers) + "\n\n"
            text += service_peers_table(
                [per_seed(remote) for _, remote in pairs], [per_seed(r) for r in peers]
            )
    else:
        results = run_suite(
            env_names,
            rounds,
            seeds,
            peers=not args.no_peers,
            progress=progress,
            installed=installed,
        )
        summaries = [per_seed(r) for r in results]
        text = markdown_table(results) + "\n\n" + targets_table(summaries)
        text += "\n\n" + exploration_table(summaries)
    _publish(args, text, started, [per_seed(r) for r in results])
    return 0


def _named_peers(names: str) -> dict[str, bool]:
    """Library -> run it: the installed ones among ``names`` (comma-separated).

    Raises ValueError for a name that is no peer library; one not installed is
    reported on stderr and skipped.
    """
    known = available()
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    unknown = sorted(wanted - set(known))
    if unknown or not wanted:
        raise ValueError(
            f"--peers: no peer library named {', '.join(map(repr, unknown)) or repr(names)} "
            f"(known: {', '.join(sorted(known))})"
        )
    for name in sorted(n for n in wanted if not known[n]):
        print(f"banditd simulate: {name} is not installed (eval extra): skipped", file=sys.stderr)
    return {name: name in wanted and ok for name, ok in known.items()}


def _publish(args: argparse.Namespace, text: str, started: float, results: Any) -> None:
    """Print the tables with the time taken; write them to --output and ``results`` to --results."""
    text += f"\n\n({time.perf_counter() - started:.0f} s)\n"
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    if args.results:
        with open(args.results, "w") as f:
            json.dump(results, f, indent=1)


def run_items(
    args: argparse.Namespace, settings: Settings, seeds: tuple[int, ...], started: float
) -> int:
    """``--study items``: item models against per-item LinUCB and VW, in process and over HTTP."""
    world = ItemWorld()
    rounds = args.rounds or 5000
    alpha = 1.0
    if args.print_config:
        print(items_study.experiments_toml(args.prefix, world, seeds, alpha), end="")
        return 0
    transport = None
    if args.url:
        key = args.api_key or next(iter(sorted(settings.api_keys)), "")
        transport = HttpTransport(args.url, key)

    def progress(agent: str, seed: int, reward: float) -> None:
        print(f"items: {agent} seed {seed}: {reward:.4f}", file=sys.stderr, flush=True)

    try:
        results = items_study.compare(
            world, rounds, seeds, alpha, transport=transport, prefix=args.prefix, progress=progress
        )
    except RuntimeError as exc:
        print(f"banditd simulate: {exc}", file=sys.stderr)
        print(
            "(does BANDITD_CONFIG include `banditd simulate --study items --print-config`?)",
            file=sys.stderr,
        )
        return 1
    finally:
        if transport is not None:
            transport.close()
    per_agent = {name: r.tolist() for name, (r, _) in results.items()}
    _publish(args, items_study.report(results, world, rounds), started, per_agent)
    return 0


def per_seed(result: RunResult) -> dict[str, Any]:
    """A result's summary plus its per-seed figures, for later paired comparisons."""
    return {
        **result.summary(),
        "seed_list": list(result.seeds),
        "per_seed": {
            "mean_reward": result.mean_reward.tolist(),
            "second_half": result.second_half.tolist(),
            "regret": result.regret.tolist(),
            "seconds": result.seconds.tolist(),
        },
    }
