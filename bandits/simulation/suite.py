"""The comparison suite: which agents run on which environment, for how long.

Two sizes: ``quick`` (seconds; a smoke test of every path) and ``full`` (the
figures in docs/LEARNING.md; minutes). Each environment gets banditd's
policies, stationary and, where the environment drifts or to show what
forgetting costs, with a discount; and the peers whose libraries are
installed, with the same exploration settings as banditd where the two share
a knob (LinUCB ``alpha``, linear TS posterior scale).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..auto_forgetting import AUTO
from ..policy import PolicyParams
from .agents import AgentFactory, banditd_factory
from .environments import ENVIRONMENTS, Environment
from .runner import RunResult, run

__all__ = ["Entry", "Size", "SIZES", "lineup", "run_suite"]


@dataclass(frozen=True)
class Size:
    """Rounds per environment and the seeds of one suite size."""

    rounds: dict[str, int]
    seeds: tuple[int, ...]


SQUARECB_SCALES = (10.0, 30.0, 1000.0)  # gamma_scale: VW's default, and two greedier

SIZES = {
    "quick": Size({"synthetic": 2000, "digits": 1000, "drifting": 2000}, (0, 1)),
    "full": Size({"synthetic": 20000, "digits": 10000, "drifting": 20000}, tuple(range(8))),
}


@dataclass(frozen=True)
class Entry:
    """One agent of the lineup.

    Attributes
    ----------
    name : str
        Label in the tables, e.g. ``"banditd linucb α=1"``.
    library : str
        ``"banditd"``, ``"mabwiser"`` or ``"vw"``.
    build : callable
        Returns the agent factory; called only when the entry runs, so a
        peer's library is imported only then.
    policy : str, optional
        banditd's policy name (None for peers).
    params : PolicyParams, optional
        banditd's knobs (None for peers).
    discount : float or "auto"
        banditd's forgetting factor (1.0: none).
    """

    name: str
    library: str
    build: Callable[[], AgentFactory]
    policy: str | None = None
    params: PolicyParams | None = None
    discount: float | str = 1.0

    @property
    def stationary(self) -> bool:
        """Whether the agent never forgets."""
        return self.discount == 1.0


def _banditd(policy: str, label: str, discount: float | str = 1.0, **knobs: float) -> Entry:
    params = PolicyParams(**knobs)
    name = f"banditd {policy}{' ' + label if label else ''}"
    if discount != 1.0:
        name += " γ=auto" if discount == AUTO else f" γ={discount:g}"
    return Entry(
        name,
        "banditd",
        lambda: banditd_factory(policy, params, discount=discount),
        policy,
        params,
        discount,
    )


def _peers(env_name: str) -> list[Entry]:
    from .peers import mabwiser_factory, vw_factory

    entries = []
    for alpha in (0.3, 1.0):
        entries.append(
            Entry(
                f"MABWiser LinUCB α={alpha:g}",
                "mabwiser",
                lambda a=alpha: mabwiser_factory("linucb", a),
            )
        )
    for v in (0.1, 0.3):
        entries.append(
            Entry(f"MABWiser LinTS α={v:g}", "mabwiser", lambda a=v: mabwiser_factory("lints", a))
        )
    entries.append(Entry("VW squarecb", "vw", lambda: vw_factory("--squarecb")))
    for g in SQUARECB_SCALES[1:]:  # VW's default is 10, the first
        entries.append(
            Entry(
                f"VW squarecb γ₀={g:g}",
                "vw",
                lambda g=g: vw_factory(f"--squarecb --gamma_scale {g:g}"),
            )
        )
    entries.append(Entry("VW ε-greedy ε=0.05", "vw", lambda: vw_factory("--epsilon 0.05")))
    return entries


def peer_lineup(env_name: str, installed: dict[str, bool] | None = None) -> list[Entry]:
    """The peers compared on ``env_name`` whose library is installed (or marked so in
    ``installed``, library -> use it)."""
    from .peers import available

    found = available() if installed is None else installed
    return [e for e in _peers(env_name) if found.get(e.library)]


def lineup(env_name: str, *, peers: bool = True, installed: dict[str, bool] | None = None):
    """The agents compared on ``env_name``: banditd's, then the installed peers.

    Parameters
    ----------
    env_name : str
        A key of :data:`~.environments.ENVIRONMENTS`.
    peers : bool, default True
        Include the peers (those whose library is importable).
    installed : dict, optional
        Library -> importable; defaults to :func:`.peers.available`.

    Returns
    -------
    list of Entry
    """
    entries = [
        _banditd("random", ""),
        _banditd("beta_ts", ""),
        _banditd("epsilon_greedy", "ε=0.05", epsilon=0.05),
        _banditd("linucb", "α=0.3", alpha=0.3),
        _banditd("linucb", "α=1", alpha=1.0),
        _banditd("lin_ts", "v=0.1", v=0.1),
        _banditd("lin_ts", "v=0.3", v=0.3),
        *(_banditd("squarecb", f"γ₀={g:g}", gamma_scale=g) for g in SQUARECB_SCALES),
    ]
    forgetting = [0.99, AUTO] if env_name != "drifting" else [0.99, 0.995, 0.999, AUTO]
    for gamma in forgetting:
        entries.append(_banditd("linucb", "α=0.3", gamma, alpha=0.3))
        entries.append(_banditd("lin_ts", "v=0.1", gamma, v=0.1))
    entries.append(_banditd("squarecb", "γ₀=30", AUTO, gamma_scale=30.0))
    if env_name == "drifting":
        entries.append(_banditd("beta_ts", "", 0.99))
    if peers:
        entries += peer_lineup(env_name, installed)
    return entries


def run_suite(
    env_names: Sequence[str],
    rounds: dict[str, int],
    seeds: Sequence[int],
    *,
    peers: bool = True,
    progress: Callable[[RunResult], None] | None = None,
    installed: dict[str, bool] | None = None,
) -> list[RunResult]:
    """Run the lineup of every environment in ``env_names``.

    Parameters
    ----------
    env_names : sequence of str
        Keys of :data:`~.environments.ENVIRONMENTS`.
    rounds : dict
        Rounds per seed for each environment (e.g. ``SIZES["full"].rounds``).
    seeds : sequence of int
    peers : bool, default True
        Include the installed peers.
    progress : callable, optional
        Called with each result as soon as it is ready.
    installed : dict, optional
        Library -> use it; defaults to every importable peer library.

    Returns
    -------
    list of RunResult
        In lineup order, environment by environment.
    """
    results = []
    for env_name in env_names:
        env: Environment = ENVIRONMENTS[env_name]()
        for entry in lineup(env_name, peers=peers, installed=installed):
            result = run(env, entry.name, entry.build(), rounds[env_name], seeds)
            results.append(result)
            if progress is not None:
                progress(result)
    return results
