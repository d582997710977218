"""Keep the experiments file current in a long-running process.

Both the API and the worker hold a :class:`ConfigSource`. It looks at the
file's modification time at most once per ``check_seconds`` and reloads when it
changed. A file that fails to parse is logged and ignored: the last good
config stays in force until the file is fixed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from app.config import Config, ConfigError, load_config

log = logging.getLogger(__name__)


class ConfigSource:
    """The latest good :class:`Config` read from ``path``."""

    def __init__(
        self, path: str, *, check_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self.clock = clock
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._config = load_config(path)  # no good config yet: let the error stop start-up
        self._checked_at = clock()
        self.generation = 1

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
                config = load_config(self.path)
            except ConfigError as exc:
                if self.last_error != str(exc):
                    log.error("config rejected, keeping the last good one: %s", exc)
                self.last_error = str(exc)
                return False
            self.last_error = None
            changed = {
                n
                for n, e in config.experiments.items()
                if (old := self._config.get(n)) is None or old.version != e.version
            }
            self._config = config
            self.generation += 1
            if changed:
                log.info(
                    "config reloaded from %s; changed experiments: %s",
                    self.path,
                    ", ".join(sorted(changed)),
                )
            return True

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)
