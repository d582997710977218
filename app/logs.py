"""Log lines as text (the default) or JSON, and one line per answered request.

``BANDITD_LOG_FORMAT=json`` makes every line one JSON object (python-json-logger)
with ``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, plus the fields a line
carries: a request line adds ``method``, ``route``, ``status``,
``duration_ms``, ``experiment``, ``decision_id`` and, for an error,
``error_code``. ``BANDITD_LOG_LEVEL`` sets the least severe level logged;
request lines are ``INFO``, so ``WARNING`` leaves them out, and
``BANDITD_REQUEST_LOG`` (``all``, ``errors``, ``none``) which answers get one.
A text line escapes the control characters of its message (``\\n``, ``\\u0085``), so
an id a client sent cannot start a line of its own; a traceback after it keeps its lines
as Python wrote them (the JSON format escapes those too).

This module imports nothing from ``app``: gunicorn.conf.py loads it by path in
each web process before gevent patches it, so it must not pull in the app.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.orjson import OrjsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = ("levelname", "name", "message")
JSON_NAMES = {"levelname": "level", "name": "logger"}
REQUEST_LOGGER = "banditd.request"

_HANDLER_MARK = "_banditd_handler"


# Control characters (C0, DEL, C1 and the Unicode line and paragraph separators) as
# escapes: a value a client sent (a decision id, an experiment name) must not start a
# line of its own in the text log that reads as the service's.
_ESCAPES = {
    c: ("\\n" if c == 10 else "\\r" if c == 13 else "\\t" if c == 9 else f"\\u{c:04x}")
    for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)
}


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` with the message's control characters escaped: one record, one line
    (a traceback, which follows the message, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's line, control characters escaped."""
        line = super().formatMessage(record)
        return line if line.isprintable() else line.translate(_ESCAPES)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``)."""
    if log_format == "json":
        # timestamp: ISO 8601 in UTC with microseconds, under "time"
        return OrjsonFormatter(list(JSON_FIELDS), rename_fields=JSON_NAMES, timestamp="time")
    return TextFormatter(TEXT_FORMAT)


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Send every log line to stderr in ``log_format`` from ``level`` up.

    Replaces the handler an earlier call installed (and only that one), so a
    process can call it again.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    # What no line shows (gunicorn's show the process id: kept), and each record would
    # otherwise look up (the logging docs' "Optimization"): the caller's frame, the thread
    # (gevent calls in a web process), the multiprocessing name. A request line then
    # costs about half as much.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def log_request(
    method: str,
    route: str,
    status: int,
    seconds: float,
    experiment: str | None,
    decision_id: str | None,
    error_code: str | None = None,
) -> None:
    """Log one answered request at INFO (a no-op when INFO is not logged)."""
    log = logging.getLogger(REQUEST_LOGGER)
    if not log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "experiment": experiment,
        "decision_id": decision_id,
    }
    if error_code is not None:
        fields["error_code"] = error_code
    log.info(
        "%s %s %d %.1f ms experiment=%s decision_id=%s%s",
        method,
        route,
        status,
        seconds * 1000,
        experiment or "-",
        decision_id or "-",
        f" error={error_code}" if error_code else "",
        extra=fields,
    )
