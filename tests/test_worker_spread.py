"""Many workers share many experiments: the leases spread evenly, follow joins and deaths.

Three real ``banditd worker`` processes and twelve experiments (issue 15): once
they have settled, every experiment has one holder and no worker holds more than
⌈M/N⌉ + 1; a worker that joins takes its share within 10 s; one that is killed
gives its share up within the lease time, to the live ones, and every stream is
still learned from.
"""

from __future__ import annotations

import math
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from app import keys
from tests.conftest import poll
from tests.service_processes import running_service, stop

EXPERIMENTS = [f"spread_{i:02d}" for i in range(12)]
JOIN_SECONDS = 10.0  # the bound for a joining worker to take its share
LEASE_SECONDS = 5.0  # Leases' default ttl: a dead worker's leases lapse within it

EXPERIMENT_TOML = """\
[experiments.{name}]
policy = "linucb"
alpha = 0.5
arms = ["a", "b"]
reward = {{ default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }}

[experiments.{name}.features]
categorical = {{ city = ["berlin", "paris"] }}
"""


def holders(redis_client) -> dict[str, str | None]:
    """experiment -> the holder of its lease (None while nobody holds it)."""
    values = redis_client.mget([keys.owner(e) for e in EXPERIMENTS])
    return {e: v.decode() if v else None for e, v in zip(EXPERIMENTS, values)}


def spread_over(redis_client, workers: int) -> Counter | None:
    """Leases per holder if every experiment is held by one of ``workers`` live workers,
    each holding between ⌊M/N⌋ - 1 and ⌈M/N⌉ + 1; else None."""
    held = holders(redis_client)
    if None in held.values():
        return None
    counts = Counter(held.values())
    share = len(EXPERIMENTS) / workers
    if len(counts) != workers:
        return None
    if max(counts.values()) > math.ceil(share) + 1 or min(counts.values()) < math.floor(share) - 1:
        return None
    return counts


def learns_everywhere(svc) -> None:
    """A decision and its reward in every experiment reach each model within a deadline."""
    for name in EXPERIMENTS:
        r = svc.post("/choose", {"experiment": name, "context": {"city": "berlin"}})
        assert r.status_code == 200, r.text
        decision_id, arm = r.json()["decision_id"], r.json()["arms"][0]["arm"]
        r = svc.post("/reward", {"decision_id": decision_id, "arm": arm, "reward": 1})
        assert r.status_code == 202, r.text


@pytest.fixture
def service(tmp_path: Path, engine, redis_client, request):
    config = "\n".join(EXPERIMENT_TOML.format(name=name) for name in EXPERIMENTS)
    with running_service(config, tmp_path, request) as svc:
        yield svc


def test_leases_spread_over_workers_and_follow_joins_and_deaths(service, redis_client):
    poll(lambda: spread_over(redis_client, 1), timeout=15.0)

    joined_at = time.monotonic()
    service.add_worker()
    service.add_worker()
    counts = poll(lambda: spread_over(redis_client, 3), timeout=JOIN_SECONDS + 5.0)
    took = time.monotonic() - joined_at
    print(f"spread: 2 workers joined, shares {sorted(counts.values())} after {took:.1f} s")
    assert took <= JOIN_SECONDS, f"the joining workers took {took:.1f} s to get their share"
    assert max(counts.values()) <= math.ceil(len(EXPERIMENTS) / 3) + 1, counts

    # every stream is learned from, whichever worker holds it
    before = {e: redis_client.get(keys.applied(e)) for e in EXPERIMENTS}
    learns_everywhere(service)
    poll(
        lambda: all(redis_client.get(keys.applied(e)) != before[e] for e in EXPERIMENTS),
        timeout=10.0,
    )

    # kill the holder of the most leases: its share goes to the two live workers
    victim_holder = counts.most_common(1)[0][0]
    victim = next(p for p in service.workers() if victim_holder.endswith(f"-{p.pid}"))
    victim.send_signal(signal.SIGKILL)
    stop(victim)
    killed_at = time.monotonic()
    counts = poll(lambda: spread_over(redis_client, 2), timeout=LEASE_SECONDS + 5.0)
    took = time.monotonic() - killed_at
    print(f"spread: a worker killed, shares {sorted(counts.values())} after {took:.1f} s")
    assert victim_holder not in counts
    assert took <= LEASE_SECONDS + 2.0, f"its share was taken {took:.1f} s after the kill"

    before = {e: redis_client.get(keys.applied(e)) for e in EXPERIMENTS}
    learns_everywhere(service)
    poll(
        lambda: all(redis_client.get(keys.applied(e)) != before[e] for e in EXPERIMENTS),
        timeout=10.0,
    )
