"""Tell a poisoned entry from a passing fault, and find the poisoned ones in a batch.

A storage outage, a lost lease or a full Redis passes: the worker retries the
batch. An entry that fails to decode, to learn from or to log for a reason of
its own (a character Postgres cannot store, a malformed field, features that
do not fit the model) fails the same way forever: it is poisoned.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import psycopg2
import redis
import sqlalchemy.exc

from app.cluster.client import UNAVAILABLE
from app.lease import LeaseLost

T = TypeVar("T")

# Passing faults of the storage: the worker backs off and tries again.
RETRYABLE = (
    *UNAVAILABLE,  # Redis away, or a cluster failing over
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    # EventLog.write and snapshots COPY through the raw DBAPI connection, whose errors
    # SQLAlchemy does not wrap
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
)


def stream_vanished(exc: redis.ResponseError) -> bool:
    """Whether ``exc`` says a stream or its consumer group was deleted (a flush, a restart)."""
    message = str(exc)
    # a pipeline prefixes the error with the failing command
    return "NOGROUP" in message or "no longer exists" in message


# Postgres refuses the data itself: a bad character, a number or time out of range, a
# constraint. Anything else from Postgres (an outage, a missing table) is not the entry's fault.
_REFUSED_BY_POSTGRES = (
    psycopg2.DataError,
    psycopg2.IntegrityError,
    sqlalchemy.exc.DataError,
    sqlalchemy.exc.IntegrityError,
)
_NEVER_POISON = (
    redis.RedisError,
    *UNAVAILABLE,  # RedisClusterException is not a RedisError
    psycopg2.Error,
    sqlalchemy.exc.SQLAlchemyError,
    LeaseLost,
    MemoryError,
)


def is_poison(exc: BaseException) -> bool:
    """Whether ``exc`` says the data is bad (retrying cannot help), not the storage."""
    if isinstance(exc, _REFUSED_BY_POSTGRES):
        return True
    return isinstance(exc, Exception) and not isinstance(exc, _NEVER_POISON)


class PoisonedBatch(Exception):
    """A batch of an experiment's stream holds a poisoned entry; read it again entry by entry."""

    def __init__(self, experiment: str, cause: BaseException) -> None:
        super().__init__(f"{experiment}: {type(cause).__name__}: {cause}")
        self.experiment = experiment


@contextmanager
def poison_of(experiment: str) -> Iterator[None]:
    """Turn a poison error raised in the block into :class:`PoisonedBatch`; let others pass."""
    try:
        yield
    except Exception as exc:
        if is_poison(exc):
            raise PoisonedBatch(experiment, exc) from exc
        raise


def isolate(items: Sequence[T], attempt: Callable[[Sequence[T]], object]) -> list[tuple[T, str]]:
    """Run ``attempt`` over ``items``, halving on poison until each failure stands alone.

    ``attempt`` sees the items in order, each exactly once in a part that succeeds.
    Returns the items that fail on their own, with their errors; a fault that is
    not poison is raised.
    """
    if not items:
        return []
    try:
        attempt(items)
        return []
    except Exception as exc:
        if not is_poison(exc):
            raise
        if len(items) == 1:
            return [(items[0], f"{type(exc).__name__}: {exc}".strip())]
    middle = len(items) // 2
    return isolate(items[:middle], attempt) + isolate(items[middle:], attempt)
