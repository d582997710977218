"""Playing the simulation's episodes through a running banditd, for ``banditd simulate --url``.

The policies to compare as the command line gives them (:class:`PolicySpec`),
the experiments the service needs for them (:func:`experiments_toml`), an
agent that chooses with ``POST /choose`` and reports with ``POST /reward``
(:class:`ServiceAgent`, over :class:`HttpTransport`), and the comparisons:
each policy through the service against the same policy in process
(:func:`compare_through_service`) and against the peer libraries on the same
episodes (:func:`run_peers`).
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from bandits import POLICIES, PolicyParams
from bandits.auto_forgetting import AUTO
from bandits.simulation.agents import banditd_factory
from bandits.simulation.environments import Environment
from bandits.simulation.runner import RunResult
from bandits.simulation.runner import run as run_agent
from bandits.simulation.suite import peer_lineup

DEFAULT_HTTP_POLICIES = ("linucb:alpha=0.3", "lin_ts:v=0.1")
KNOBS = {
    "alpha": "alpha",
    "epsilon": "epsilon",
    "v": "v",
    "draws": "draws",
    "gamma_scale": "gamma_scale",
    "gamma_exponent": "gamma_exponent",
}


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


def split_url(url: str) -> tuple[str, int, str]:
    """``(host, port, base path)`` of the service's ``http://`` URL; ValueError if it is not one."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:  # a port that is not a number, or out of range
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None:
        raise ValueError(f"--url must be http://host:port, got {url!r}")
    return parts.hostname, port, parts.path.rstrip("/")


class HttpTransport:
    """JSON over HTTP/1.1, reconnecting and retrying a request that times out.

    Retrying is safe because every request the agent sends is idempotent:
    ``/choose`` carries a ``request_id`` and a repeated reward is counted once.
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 30.0, attempts: int = 3) -> None:
        host, port, self.base = split_url(url)
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
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
