"""A load generator that remembers exactly what the service acknowledged.

A few threads, each with its own ``requests`` session and seeded generator,
send choose+reward pairs at a modest, fixed total rate. A share of the
decisions gets no reward (their impressions must get the default reward when
the window closes). Every answer lands in a :class:`Ledger`: which decisions
were answered 200, which rewards 202, and which requests got no usable answer
(a 5xx or a broken connection: the service may or may not have recorded those,
so the audit treats them as "maybe").
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import requests

CITIES = ("berlin", "hamburg", "munich")
ARMS = ("a_cleaning", "a_kitchen", "a_warehouse", "a_delivery")
REQUEST_TIMEOUT = 5.0


def experiment_toml(name: str, *, window_seconds: float = 2.0) -> str:
    """The experiments file the load generator's requests fit: LinUCB over 4 arms,
    ``hour`` and ``city`` features, a short reward window so default rewards happen."""
    arms = ", ".join(f'"{a}"' for a in ARMS)
    cities = ", ".join(f'"{c}"' for c in CITIES)
    return (
        f"[experiments.{name}]\n"
        'policy = "linucb"\n'
        "alpha = 1.0\n"
        "epsilon = 0.1\n"
        f"arms = [{arms}]\n"
        f"reward = {{ default = 0.0, window_seconds = {window_seconds:g}, min = 0.0, max = 1.0 }}\n"
        f"\n[experiments.{name}.features]\n"
        'numeric = ["hour"]\n'
        f"categorical = {{ city = [{cities}] }}\n"
    )


@dataclass
class Ledger:
    """What the service answered, request by request (thread-safe)."""

    decisions: dict[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    explicit: dict[tuple[str, str], float] = field(default_factory=dict)  # 202 accepted
    late: dict[tuple[str, str], float] = field(default_factory=dict)  # 409 window closed
    maybe_rewards: dict[tuple[str, str], float] = field(default_factory=dict)  # no answer, 5xx
    maybe_decisions: int = 0  # /choose without a usable answer: recorded or not
    unrewarded: set[tuple[str, str]] = field(default_factory=set)  # left to the default
    statuses: Counter = field(default_factory=Counter)  # (route, status or "no answer") -> n
    unexpected: list[str] = field(default_factory=list)  # answers no fault explains
    slowest_503: float = 0.0  # seconds
    answered_503: list[float] = field(default_factory=list)
    pairs: int = 0  # choose+reward pairs started
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, route: str, status: int | str, elapsed: float) -> None:
        """Count one answer (or ``"no answer"``) of ``route``."""
        with self.lock:
            self.statuses[(route, status)] += 1
            if status == 503:
                self.answered_503.append(elapsed)
                self.slowest_503 = max(self.slowest_503, elapsed)

    def five_xx(self, status: int | None = None) -> int:
        """Answers with a 5xx status (``status``: only that one)."""
        return sum(
            n
            for (_, s), n in self.statuses.items()
            if isinstance(s, int) and s >= 500 and (status is None or s == status)
        )

    def summary(self) -> dict:
        """Counts for a report."""
        return {
            "pairs_sent": self.pairs,
            "decisions_accepted": len(self.decisions),
            "impressions_accepted": sum(len(v) for v in self.decisions.values()),
            "rewards_accepted": len(self.explicit),
            "rewards_late": len(self.late),
            "rewards_left_to_default": len(self.unrewarded),
            "decisions_unanswered": self.maybe_decisions,
            "rewards_unanswered": len(self.maybe_rewards),
            "http_5xx": self.five_xx(),
            "http_503": self.five_xx(503),
            "http_500": self.five_xx(500),
            "slowest_503_ms": round(self.slowest_503 * 1000, 1),
            "statuses": {f"{route} {status}": n for (route, status), n in self.statuses.items()},
            "unexpected": self.unexpected[:20],
        }


class LoadGenerator:
    """Threads sending choose+reward pairs for one experiment until stopped or done.

    The experiment takes ``hour`` (numeric) and ``city`` (categorical) features;
    ``k`` is 1 or 2 at random and the reward, if any, is for the top arm.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        experiment: str,
        ledger: Ledger,
        *,
        threads: int = 3,
        rate: float = 150.0,
        max_pairs: int | None = None,
        skip_share: float = 0.15,
        seed: int = 0,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.experiment = experiment
        self.ledger = ledger
        self.rate = rate
        self.max_pairs = max_pairs
        self.skip_share = skip_share
        self.seed = seed
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i, threads), daemon=True, name=f"load-{i}")
            for i in range(threads)
        ]
        self.errors: list[BaseException] = []

    def start(self) -> "LoadGenerator":
        """Start sending."""
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop after the pairs in flight and wait for every thread."""
        self.stop_event.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads (they end by themselves once ``max_pairs`` were sent)."""
        for t in self.threads:
            t.join(timeout)
        if self.errors:
            raise self.errors[0]

    @property
    def running(self) -> bool:
        """True while some thread is still sending."""
        return any(t.is_alive() for t in self.threads)

    def _claim_pair(self) -> bool:
        with self.ledger.lock:
            if self.stop_event.is_set() or (
                self.max_pairs is not None and self.ledger.pairs >= self.max_pairs
            ):
                return False
            self.ledger.pairs += 1
            return True

    def _run(self, index: int, n_threads: int) -> None:
        rng = np.random.default_rng([self.seed, index])
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.api_key}"
        interval = n_threads / self.rate
        next_at = time.monotonic() + rng.random() * interval
        try:
            while self._claim_pair():
                self._pair(session, rng)
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    self.stop_event.wait(pause)
                else:
                    next_at = time.monotonic()  # behind: do not burst to catch up
        except BaseException as exc:  # surfaced by join()
            self.errors.append(exc)
        finally:
            session.close()

    def _post(self, session: requests.Session, route: str, body: dict):
        started = time.monotonic()
        try:
            r = session.post(self.base_url + route, json=body, timeout=REQUEST_TIMEOUT)
        except requests.RequestException:
            self.ledger.count(route, "no answer", time.monotonic() - started)
            return None
        self.ledger.count(route, r.status_code, time.monotonic() - started)
        if r.status_code >= 500:
            if r.status_code != 503 or r.json().get("error", {}).get("code") != (
                "storage_unavailable"
            ):
                self._unexpected(route, r)
            return None
        return r

    def _unexpected(self, route: str, r: requests.Response) -> None:
        with self.ledger.lock:
            self.ledger.unexpected.append(f"{route} {r.status_code} {r.text[:200]}")

    def _pair(self, session: requests.Session, rng: np.random.Generator) -> None:
        ledger = self.ledger
        context = {"hour": int(rng.integers(24)), "city": CITIES[rng.integers(len(CITIES))]}
        k = int(rng.integers(1, 3))
        skip = rng.random() < self.skip_share
        value = float(rng.random() < 0.3)
        r = self._post(
            session, "/choose", {"experiment": self.experiment, "context": context, "k": k}
        )
        if r is None:
            with ledger.lock:
                ledger.maybe_decisions += 1
            return
        if r.status_code != 200:
            self._unexpected("/choose", r)
            return
        answer = r.json()
        decision_id = answer["decision_id"]
        shown = tuple((a["arm"], position) for position, a in enumerate(answer["arms"]))
        top = shown[0][0]
        with ledger.lock:
            ledger.decisions[decision_id] = shown
            if skip:
                ledger.unrewarded.add((decision_id, top))
        if skip:
            return
        body = {"decision_id": decision_id, "arm": top, "reward": value}
        r = self._post(session, "/reward", body)
        key = (decision_id, top)
        with ledger.lock:
            if r is None:
                ledger.maybe_rewards[key] = value
            elif r.status_code == 202 and r.json().get("status") == "accepted":
                ledger.explicit[key] = value
            elif r.status_code == 409 and r.json()["error"]["code"] == "reward_window_closed":
                ledger.late[key] = value  # logged as late; the impression gets the default
            else:
                ledger.unexpected.append(f"/reward {r.status_code} {r.text[:200]}")
