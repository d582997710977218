"""Keep the experiments file current in a long-running process.

Both the API and the worker hold a :class:`ConfigSource`. It looks at the
file's modification time at most once per ``check_seconds`` and reloads when it
changed. A file that fails to parse is logged and ignored: the last good
config stays in force until the file is fixed. Every accepted file is kept
in Redis (app/last_good_config.py), so that a process that starts while the
file is broken starts from the last good one, reporting ``degraded``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from app.config import Config, ConfigError, config_from_text, read_config
from app.last_good_config import LastGoodConfig

log = logging.getLogger(__name__)


class ConfigSource:
    """The latest good :class:`Config` read from ``path``."""

    def __init__(
        self,
        path: str,
        *,
        check_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        last_good: LastGoodConfig | None = None,
    ) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self.clock = clock
        self.last_good = last_good
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._config = self._first_config()
        self._checked_at = clock()
        self.generation = 1

    def _first_config(self) -> Config:
        """The file's config, or the last good one while the file is broken.

        With neither, the file's error stops start-up.
        """
        try:
            config, text = read_config(self.path)
        except ConfigError as exc:
            kept = self.last_good.fetch() if self.last_good else None
            if kept is None:
                raise
            text, saved_ms = kept
            config = config_from_text(text, "the last good config")
            self.last_error = str(exc)
            log.error(
                "config rejected: %s; starting from the last good config (accepted %s)",
                exc,
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(saved_ms / 1000)),
            )
            return config
        self._keep(text)
        return config

    def _keep(self, text: str) -> None:
        if self.last_good is not None:
            self.last_good.save(text)

    def current(self) -> Config:
        """The config in force, reloading first if the file changed."""
        if self.clock() - self._checked_at >= self.check_seconds:
            self.reload_if_changed()
        return self._config

    def reload_if_changed(self) -> bool:
        """Reload now if the file changed since the last look; True if a new config took effect."""
        with self._lock:
            self._checked_at = self.clock()
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                config, text = read_config(self.path)
            except ConfigError as exc:
                if self.last_error != str(exc):
                    log.error("config rejected, keeping the last good one: %s", exc)
                self.last_error = str(exc)
                return False
            if self.last_error is not None:
                log.info("config accepted again from %s after a rejected version", self.path)
            self.last_error = None
            self._keep(text)
            _log_changes(self.path, self._config, config)
            self._config = config
            self.generation += 1
            return True

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)


def _log_changes(path: str, old: Config, new: Config) -> None:
    """Log which experiments a reload added, changed and removed."""
    changed = sorted(
        n for n, e in new.experiments.items() if (was := old.get(n)) and was.version != e.version
    )
    added = sorted(set(new.experiments) - set(old.experiments))
    removed = sorted(set(old.experiments) - set(new.experiments))
    for what, names in (("changed", changed), ("added", added)):
        if names:
            log.info("config reloaded from %s; %s experiments: %s", path, what, ", ".join(names))
    if removed:
        log.warning(
            "config reloaded from %s; removed experiments: %s (answering 404 to /choose; "
            "the worker drains their streams and reward windows, then lets them go)",
            path,
            ", ".join(removed),
        )
