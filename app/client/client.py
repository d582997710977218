"""BanditClient: /choose and /reward over one pool of kept-alive connections.

Retries are made only where a repeat cannot do anything twice:

- ``/choose`` carries a ``request_id`` (the client makes one, a random UUID, unless
  the caller gives one or turns ``auto_request_id`` off): the service answers a
  repeated id with the same decision and records nothing new, so a request lost
  after it was sent, or answered 502/503/504, is sent again. Without a
  ``request_id`` only a connection that could not be opened (nothing sent) is
  retried.
- ``/reward`` is idempotent by the service's contract (the same reward again is
  answered ``already_recorded`` and counts once), so it is retried likewise.

4xx answers are never retried: they would be answered the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import urllib3
from urllib3.exceptions import HTTPError
from urllib3.util import Retry, Timeout

from app.client.errors import TransportError, api_error
from app.client.results import Decision, RewardReceipt

# A request path waits for a decision at most about this long per attempt: /choose answers
# in ~10 ms at p99 on two cores (README "Serving"), so a second means the service is in trouble.
DEFAULT_TIMEOUT = Timeout(connect=0.5, read=1.0)
RETRY_STATUSES = frozenset({502, 503, 504})


class BanditClient:
    """A client of one banditd service: ``choose``, ``reward`` and ``experiments``.

    Parameters
    ----------
    base_url : str
        Where the API is served, e.g. ``"http://localhost:8000"``.
    api_key : str
        A bearer key of ``BANDITD_API_KEYS``.
    timeout : float or urllib3 Timeout, default ``DEFAULT_TIMEOUT``
        Per attempt: 0.5 s to connect, 1 s for the answer.
    retries : int, default 2
        Extra attempts where a retry is safe (see the module docstring).
    backoff : float, default 0.05
        Seconds before the first retry, doubling after each.
    auto_request_id : bool, default True
        Give each ``choose`` a random ``request_id`` when the caller gives none, which
        makes it safe to retry (the id is logged on the decision).
    pool_size : int, default 10
        Connections kept open for reuse (one per concurrent caller is enough).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | Timeout = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.05,
        auto_request_id: bool = True,
        pool_size: int = 10,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout if isinstance(timeout, Timeout) else Timeout(total=timeout)
        self.auto_request_id = auto_request_id
        self._safe = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            allowed_methods=frozenset({"GET", "POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=backoff,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        # nothing was sent when a connection cannot be opened: the one retry that is always safe
        self._connect_only = Retry(
            total=retries, connect=retries, read=0, status=0, other=0, raise_on_status=False
        )
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=pool_size)
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": "banditd-client",
        }

    def choose(
        self,
        experiment: str,
        context: Mapping[str, Any] | None = None,
        *,
        k: int = 1,
        candidates: Sequence[str] | None = None,
        request_id: str | None = None,
        unit_id: str | None = None,
    ) -> Decision:
        """The arm (or ranked slate of ``k``) to show for ``context``; see POST /choose."""
        body: dict[str, Any] = {"experiment": experiment, "k": k}
        if context is not None:
            body["context"] = dict(context)
        if candidates is not None:
            body["candidates"] = list(candidates)
        if request_id is None and self.auto_request_id:
            request_id = uuid.uuid4().hex
        if request_id is not None:
            body["request_id"] = request_id
        if unit_id is not None:
            body["unit_id"] = unit_id
        retry = self._safe if request_id is not None else self._connect_only
        return Decision.from_json(self._call("POST", "/choose", body, retry))

    def reward(self, decision_id: str, arm: str, reward: float) -> RewardReceipt:
        """Report the reward of an arm the decision showed; ``status`` says if it was new."""
        body = {"decision_id": decision_id, "arm": arm, "reward": reward}
        return RewardReceipt.from_json(self._call("POST", "/reward", body, self._safe))

    def experiments(self) -> list[dict[str, Any]]:
        """Every configured experiment with its settings (GET /experiments)."""
        return self._call("GET", "/experiments", None, self._safe)["experiments"]

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.clear()

    def __enter__(self) -> "BanditClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any, retry: Retry) -> Any:
        try:
            response = self._pool.request(
                method,
                self.base_url + path,
                body=None if body is None else orjson.dumps(body),
                headers=self._headers,
                timeout=self.timeout,
                retries=retry,
                redirect=False,
            )
        except HTTPError as exc:
            raise TransportError(f"{method} {path}: {exc}") from exc
        try:
            data = orjson.loads(response.data)
        except orjson.JSONDecodeError:
            data = None
        if response.status < 300 and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and "code" in error:
            raise api_error(
                response.status, error["code"], error.get("message", ""), error.get("field")
            )
        text = response.data[:200].decode("utf-8", "replace")
        raise api_error(response.status, f"http_{response.status}", text or "no JSON body")
