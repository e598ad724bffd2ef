"""Counters for /metrics, fed by the appliance's event bus (in memory: they restart at zero with the
process, which Prometheus' rate() handles)."""
from __future__ import annotations

import threading
import time
from collections import Counter


class Metrics:
    def __init__(self, events):
        self.started = time.time()
        self._lock = threading.Lock()
        self.instances = Counter()  # origin kind -> instances received
        self.associations = Counter()  # "accepted"/"rejected" -> count
        events.subscribe("instance_stored", self._on_stored)
        events.subscribe("association_accepted", lambda **_: self._count(self.associations, "accepted"))
        events.subscribe("association_rejected", lambda **_: self._count(self.associations, "rejected"))

    def _count(self, counter: Counter, key: str) -> None:
        with self._lock:
            counter[key] += 1

    def _on_stored(self, origin, **_):
        self._count(self.instances, getattr(origin, "kind", "unknown"))

    def snapshot(self) -> tuple[dict, dict]:
        with self._lock:
            return dict(self.instances), dict(self.associations)
