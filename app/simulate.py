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
each); ``--print-config`` prints them as TOML for ``BANDITD_CONFIG``.

``--study ope`` and ``--study propensity`` print the off-policy evaluation
checks of :mod:`bandits.simulation.ope_study` instead, and ``--study items``
the item models' study on short-lived items (:mod:`app.item_models.study`).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import sys
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from app.cli_args import whole
from app.item_models import study as items_study
from app.settings import Settings
from bandits import POLICIES, PolicyParams
from bandits.auto_forgetting import AUTO
from bandits.simulation.agents import banditd_factory
from bandits.simulation import ope_study
from bandits.simulation.environments import ENVIRONMENTS, Environment
from bandits.simulation.item_world import ItemWorld
from bandits.simulation.runner import RunResult, markdown_table
from bandits.simulation.peers import available
from bandits.simulation.runner import run as run_agent
from bandits.simulation.suite import SIZES, peer_lineup, run_suite

from app.simulate_tables import (
    coverage_table,
    exploration_table,
    propensity_table,
    ratio_table,
    service_peers_table,
    targets_table,
)

DEFAULT_HTTP_POLICIES = ("linucb:alpha=0.3", "lin_ts:v=0.1")
KNOBS = {
    "alpha": "alpha",
    "epsilon": "epsilon",
    "v": "v",
    "draws": "draws",
    "gamma_scale": "gamma_scale",
    "gamma_exponent": "gamma_exponent",
}


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


@dataclass(frozen=True)
class PolicySpec:
    """A banditd policy, its knobs and its forgetting, as given on the command line."""

    policy: str
    params: PolicyParams
    forgetting: float | str = 1.0  # or "auto"

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        """Parse ``policy[:knob=value,...]``, e.g. ``linucb:alpha=0.3,forgetting=auto``."""
        name, _, rest = text.partition(":")
        if name not in POLICIES:
            raise ValueError(f"unknown policy {name!r}; expected one of {sorted(POLICIES)}")
        knobs: dict[str, Any] = {}
        forgetting = 1.0
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if sep and key == "forgetting":
                forgetting = AUTO if value == AUTO else float(value)
                if not (forgetting == AUTO or 0.5 <= forgetting <= 1.0):
                    raise ValueError(f"{text!r}: forgetting must be in [0.5, 1] or auto")
                continue
            if not sep or key not in KNOBS:
                raise ValueError(
                    f"{text!r}: knobs are {sorted([*KNOBS, 'forgetting'])}, as knob=value"
                )
            knobs[KNOBS[key]] = int(value) if key == "draws" else float(value)
        return cls(name, PolicyParams(**knobs), forgetting)

    @property
    def label(self) -> str:
        """Human-readable, e.g. ``linucb α=0.3``."""
        p = self.params
        knobs = {
            "linucb": f"α={p.alpha:g}",
            "lin_ts": f"v={p.v:g}",
            "epsilon_greedy": f"ε={p.epsilon:g}",
            "squarecb": f"γ₀={p.gamma_scale:g}·t^{p.gamma_exponent:g}",
        }.get(self.policy, "")
        if self.forgetting != 1.0:
            knobs += " γ=" + ("auto" if self.forgetting == AUTO else f"{self.forgetting:g}")
        return f"{self.policy} {knobs}".strip()

    @property
    def slug(self) -> str:
        """Experiment-name-safe and a bare TOML key, e.g. ``linucb_a0p3_e0_v1``."""
        p = self.params
        slug = f"{self.policy}_a{p.alpha:g}_e{p.epsilon:g}_v{p.v:g}"
        if self.policy == "squarecb":
            slug += f"_g{p.gamma_scale:g}_x{p.gamma_exponent:g}"
        if self.forgetting != 1.0:
            slug += "_fauto" if self.forgetting == AUTO else f"_f{self.forgetting:g}"
        return slug.replace(".", "p")


def _toml_forgetting(value: float) -> str:
    return '"auto"' if value == AUTO else repr(value)


def experiment_name(prefix: str, env: Environment, spec: PolicySpec, seed: int) -> str:
    """The service experiment one seed of one policy on one environment plays."""
    return f"{prefix}{env.name}_{spec.slug}_{seed}"


def experiments_toml(prefix: str, envs: list[Environment], specs, seeds) -> str:
    """The ``[experiments.*]`` tables ``--url`` needs, one per environment, policy and seed."""
    out = ["# banditd simulate --url: one experiment (a fresh model) per env, policy, seed"]
    for env in envs:
        arms = ", ".join(f'"arm{a}"' for a in range(env.n_arms))
        numeric = ", ".join(f'"f{i}"' for i in range(env.dim))
        for spec in specs:
            p = spec.params
            for seed in seeds:
                name = experiment_name(prefix, env, spec, seed)
                out += [
                    "",
                    f"[experiments.{name}]",
                    f'policy = "{spec.policy}"',
                    f"alpha = {p.alpha!r}",
                    f"epsilon = {p.epsilon!r}",
                    f"v = {p.v!r}",
                    f"propensity_draws = {p.draws}",
                    *(
                        [
                            f"gamma_scale = {p.gamma_scale!r}",
                            f"gamma_exponent = {p.gamma_exponent!r}",
                        ]
                        if spec.policy == "squarecb"
                        else []
                    ),
                    *(
                        [f"forgetting = {_toml_forgetting(spec.forgetting)}"]
                        if spec.forgetting != 1.0
                        else []
                    ),
                    f"arms = [{arms}]",
                    "reward = { default = 0.0, window_seconds = 3600, min = 0.0, max = 1.0 }",
                    f"features = {{ numeric = [{numeric}] }}",
                ]
    return "\n".join(out) + "\n"


class Transport(Protocol):
    """Sends one JSON request to the service."""

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path``; the decoded answer (raises on an error status)."""
        ...


class HttpTransport:
    """JSON over HTTP/1.1, reconnecting and retrying a request that times out.

    Retrying is safe because every request the agent sends is idempotent:
    ``/choose`` carries a ``request_id`` and a repeated reward is counted once.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0, attempts: int = 3) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"--url must be http://host:port, got {url!r}")
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        self.base = parts.path.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.attempts = attempts
        self.retries = 0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST and decode; raises RuntimeError with the service's message on a 4xx/5xx."""
        payload = json.dumps(body)
        for attempt in range(1, self.attempts + 1):
            try:
                self.conn.request("POST", self.base + path, payload, self.headers)
                response = self.conn.getresponse()
                answer = json.loads(response.read() or b"{}")
                break
            except (TimeoutError, ConnectionError, http.client.HTTPException):
                self.conn.close()  # the next request opens a fresh connection
                if attempt == self.attempts:
                    raise
                self.retries += 1
        if response.status >= 400:
            raise RuntimeError(f"{path} answered {response.status}: {answer}")
        return answer

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class ServiceAgent:
    """Chooses through ``POST /choose`` and reports through ``POST /reward``.

    The service learns when its worker gets to the reward, so choices lag the
    rewards by the worker's and the API's refresh delays: the asynchrony whose
    cost the comparison measures.
    """

    def __init__(self, transport: Transport, experiment: str) -> None:
        self.transport = transport
        self.experiment = experiment
        self._decision = ""
        self._round = 0

    def choose(self, z: np.ndarray) -> int:
        """One decision for context ``z`` (features ``f0..``), arm ``armN`` -> ``N``."""
        self._round += 1
        body = {
            "experiment": self.experiment,
            "context": {f"f{i}": float(v) for i, v in enumerate(z)},
            "request_id": f"{self.experiment}-{self._round}",
        }
        answer = self.transport.post("/choose", body)
        self._decision = answer["decision_id"]
        return int(answer["arms"][0]["arm"][3:])

    def learn(self, z: np.ndarray, arm: int, reward: float) -> None:
        """Report the reward; the service learns it asynchronously."""
        body = {"decision_id": self._decision, "arm": f"arm{arm}", "reward": reward}
        self.transport.post("/reward", body)


def compare_through_service(
    transport: Transport,
    envs: list[Environment],
    specs: list[PolicySpec],
    rounds: dict[str, int],
    seeds: tuple[int, ...],
    prefix: str,
    progress=None,
) -> list[tuple[RunResult, RunResult]]:
    """For each environment and policy: (in-process synchronous, through the service)."""
    pairs = []
    for env in envs:
        for spec in specs:
            sync = run_agent(
                env,
                f"{spec.label} in-process, sync",
                banditd_factory(spec.policy, spec.params, discount=spec.forgetting),
                rounds[env.name],
                seeds,
            )

            def service(n_arms, dim, rng, seed, spec=spec, env=env):
                return ServiceAgent(transport, experiment_name(prefix, env, spec, seed))

            remote = run_agent(env, f"{spec.label} HTTP, async", service, rounds[env.name], seeds)
            pairs.append((sync, remote))
            if progress is not None:
                progress(sync)
                progress(remote)
    return pairs


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


def run_peers(
    envs: list[Environment],
    rounds: dict[str, int],
    seeds: tuple[int, ...],
    installed: dict[str, bool],
    progress=None,
) -> list[RunResult]:
    """The peers of ``installed`` in process, on the environments' episodes of ``seeds``."""
    results = []
    for env in envs:
        for entry in peer_lineup(env.name, installed):
            result = run_agent(env, entry.name, entry.build(), rounds[env.name], seeds)
            results.append(result)
            if progress is not None:
                progress(result)
    return results


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
