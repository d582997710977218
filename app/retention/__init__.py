"""A log that does not grow forever: day partitions of the log tables, and retention.

``decisions``, ``impressions`` and ``rewards`` are partitioned by ``log_day``,
the UTC day embedded in the decision id (:func:`log_day`), so that a row and
its repeats, and a decision with its impressions and rewards, always fall in
the same partition (migration 0005). :mod:`app.retention.partitions` creates
the day partitions ahead and drops old ones; :mod:`app.retention.keeper`
decides which days may go (``BANDITD_RETENTION_DAYS``, per experiment
``retention_days``) without breaking a rebuild, and runs in the worker.
"""

from app.retention.partitions import LOG_TABLES, log_day

__all__ = ["LOG_TABLES", "log_day"]
