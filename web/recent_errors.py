"""The last warnings and errors logged by the process, kept in memory for the dashboard and /metrics.

Logs carry no patient data (a project rule), so showing them to an admin is safe.
"""
from __future__ import annotations

import collections
import datetime
import logging
import threading


class RecentErrors(logging.Handler):
    def __init__(self, size: int = 100):
        super().__init__(level=logging.WARNING)
        self._entries: collections.deque = collections.deque(maxlen=size)
        self._lock2 = threading.Lock()
        self.counts = collections.Counter()  # level name -> records seen since start

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not break logging
            message = str(record.msg)
        with self._lock2:
            self.counts[record.levelname] += 1
            self._entries.append({
                "at": datetime.datetime.fromtimestamp(record.created),
                "level": record.levelname, "logger": record.name, "message": message[:500],
            })

    def entries(self, limit: int = 20) -> list[dict]:
        with self._lock2:
            return list(reversed(self._entries))[:limit]
