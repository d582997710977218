"""Prometheus metrics: the API's ``GET /metrics`` and ``banditd worker``'s metrics server.

The API runs as several gunicorn processes, so its figures use
prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set up by
gunicorn.conf.py): every process writes its own file and ``/metrics`` sums
them, so the totals stay right when gunicorn replaces a process. Labels are
bounded: route, status, error code, and experiment names from the config
(anything else is ``unknown``).
"""
