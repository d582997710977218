"""Poisoned entries written straight into the stream while the load and the faults run.

Each is something the API refuses but a bug, an old release or a hand-made
XADD could still put there: characters Postgres cannot store, bytes that are
not JSON, an unknown entry type, a reward that is not a number. The worker
must move each to the dead letters exactly once and let everything else flow.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import orjson
import redis

from app import keys
from app.deadletters import DeadLetters

KINDS = ("nul_request_id", "nul_context", "not_json", "unknown_type", "nan_reward")


@dataclass
class PoisonInjector:
    """Appends ``count`` poisoned entries at random moments, one kind after another."""

    client: redis.Redis
    experiment: str
    count: int = 25
    interval: tuple[float, float] = (0.5, 3.0)  # seconds between two
    seed: int = 0
    injected: dict[str, int] = field(default_factory=dict)  # kind -> appended
    failed: int = 0  # appends refused (Redis down): not counted as injected
    stop_event: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start injecting on a thread of its own."""
        self._thread = threading.Thread(target=self._run, name="poison", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop injecting and wait for the thread."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        rng = np.random.default_rng(self.seed)
        n = 0
        while n < self.count and not self.stop_event.wait(rng.uniform(*self.interval)):
            kind = KINDS[n % len(KINDS)]
            try:
                fields = self._entry(kind, n)
                if fields is None:
                    continue  # no template yet: try again later
                self.client.xadd(keys.stream(self.experiment), fields)
            except redis.RedisError:
                self.failed += 1
                continue
            self.injected[kind] = self.injected.get(kind, 0) + 1
            n += 1

    def _entry(self, kind: str, n: int) -> dict | None:
        if kind == "not_json":
            return {"t": "decision", "d": f"poison {n}: not json"}
        if kind == "unknown_type":
            return {"t": "poison", "n": str(n)}
        wanted = b"reward" if kind == "nan_reward" else b"decision"
        recent = self.client.xrevrange(keys.stream(self.experiment), count=200)
        template = next((f for _, f in recent if f.get(b"t") == wanted), None)
        if template is None:
            return None
        if kind == "nan_reward":
            return {**template, b"r": b"nan"}
        record = orjson.loads(template[b"d"])
        record["id"] = f"{self.experiment}:poison-{n}"
        if kind == "nul_request_id":
            record["req"] = f"poison\u0000{n}"
        else:
            record["ctx"] = {"city": f"ber\u0000lin {n}"}
        return {**template, b"d": orjson.dumps(record)}

    def summary(self) -> dict:
        """What was injected, and what the dead letters hold now."""
        letters = DeadLetters(self.client)
        held = letters.list(self.experiment)
        return {
            "injected": sum(self.injected.values()),
            "by_kind": dict(self.injected),
            "refused_by_redis": self.failed,
            "dead_letters": len(held),
            "dead_lettered_total": letters.total(self.experiment),
            "by_stage": {
                s: sum(1 for x in held if x.stage == s) for s in sorted({x.stage for x in held})
            },
        }
