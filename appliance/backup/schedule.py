"""The backup scheduler: one run per daily window, "run now", retries with back-off.

A thread wakes every ``tick`` seconds (or at once for "run now"). Inside the
window it runs a backup unless one already succeeded since the window opened
(the history in the index says so, so a restart inside the window does not
back up twice). A failed run is retried after ``retry_seconds``, doubling each
time, at most ``retries`` times per window; the next window starts afresh.
"""
from __future__ import annotations

import datetime
import logging
import threading
from typing import Callable

from ..errors import ConfigError
from ..lifecycle import PeriodicTask

log = logging.getLogger(__name__)


def parse_window(text: str) -> tuple[datetime.time, datetime.time]:
    try:
        start, end = (datetime.time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise ConfigError(f"[backup] window {text!r}: expected HH:MM-HH:MM, e.g. 01:00-05:00") from None
    return start, end


def window_start(now: datetime.datetime, window: tuple[datetime.time, datetime.time]) -> datetime.datetime | None:
    """The start of the window ``now`` is in (same tz as ``now``), or None outside it; may cross midnight."""
    start, end = window
    today = now.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    if start < end:
        return today if start <= now.time() < end else None
    if start == end:  # a full day
        return today if now.time() >= start else today - datetime.timedelta(days=1)
    if now.time() >= start:
        return today
    if now.time() < end:
        return today - datetime.timedelta(days=1)
    return None


class Scheduler:
    def __init__(self, service, window: str, retries: int, retry_seconds: float, tick: float = 30.0,
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now().astimezone()):
        self.service = service
        self.window = parse_window(window)
        self.retries, self.retry_seconds, self.tick = retries, retry_seconds, tick
        self.clock = clock
        self._manual: list[str] = []
        self._lock = threading.Lock()
        self._task = PeriodicTask("backup-scheduler", self.step, tick, join_seconds=60)
        self._window_key: datetime.datetime | None = None
        self._failures = 0
        self._next_try: datetime.datetime | None = None
        service.scheduler = self

    def start(self) -> None:
        self._task.start()

    def stop(self) -> None:
        self.service.cancel.set()  # a run in progress finishes its in-flight uploads, records them, and stops
        self._task.stop()

    def run_now(self, actor: str = "system") -> None:
        with self._lock:
            self._manual.append(actor)
        self._task.wake()

    def _succeeded_since(self, start: datetime.datetime) -> bool:
        start_utc = start.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return self.service.index.backup.succeeded_since(start_utc)

    def step(self) -> None:
        """One decision: a manual run if asked, else a scheduled run or retry if due."""
        with self._lock:
            actor = self._manual.pop(0) if self._manual else None
        if actor is not None:
            self._attempt("manual", actor)
            return
        if not self.service.configured:
            return
        now = self.clock()
        start = window_start(now, self.window)
        if start is None:
            return
        if start != self._window_key:
            self._window_key, self._failures, self._next_try = start, 0, None
        if self._failures > self.retries or (self._next_try and now < self._next_try):
            return
        if self._succeeded_since(start):
            return
        ok = self._attempt("retry" if self._failures else "schedule", "system")
        if not ok:
            self._failures += 1
            delay = self.retry_seconds * 2 ** (self._failures - 1)
            self._next_try = now + datetime.timedelta(seconds=delay)
            if self._failures <= self.retries:
                log.warning("backup failed; retry %d of %d in %.0f s", self._failures, self.retries, delay)
            else:
                log.error("backup failed %d times in this window; giving up until the next window",
                          self._failures)

    def _attempt(self, trigger: str, actor: str) -> bool:
        try:
            return self.service.run(trigger=trigger, actor=actor).result == "success"
        except Exception as exc:  # noqa: BLE001 - already in the history; logged without patient data
            log.error("backup run failed: %s", exc)
            return False
