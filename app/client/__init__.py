"""A Python client for banditd's HTTP API: choose, reward, typed results and errors.

>>> from app.client import BanditClient
>>> client = BanditClient("http://localhost:8000", api_key="dev-key-change-me")  # doctest: +SKIP
>>> decision = client.choose("home_feed", {"hour": 14, "city": "berlin"}, k=2)  # doctest: +SKIP
>>> client.reward(decision.decision_id, decision.arms[0].arm, 1.0).status  # doctest: +SKIP
'accepted'

The exception tree::

    BanditdError             anything the client raises
    ├── TransportError       no answer: connection refused, timeout (after the safe retries)
    └── ApiError             an answer with an error body: .status, .code, .message, .field
        ├── BadRequest       400 (missing_field, invalid_feature, unknown_arm, ...)
        ├── Unauthorized     401
        ├── Forbidden        403
        ├── NotFound         404 (unknown_experiment, unknown_decision, arm_not_shown)
        ├── Conflict         409 (reward_conflict, reward_window_closed, arm_limit_reached)
        └── ServiceUnavailable  503 (storage_unavailable), 502, 504
    (any other error answer is an ApiError itself: 413, 415, 422 request_id_reused)
"""

from app.client.client import DEFAULT_TIMEOUT, BanditClient
from app.client.errors import (
    ApiError,
    BadRequest,
    BanditdError,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
)
from app.client.results import Decision, RankedArm, RewardReceipt

__all__ = [
    "BanditClient",
    "DEFAULT_TIMEOUT",
    "Decision",
    "RankedArm",
    "RewardReceipt",
    "BanditdError",
    "TransportError",
    "ApiError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "ServiceUnavailable",
]
