"""The life cycle of the appliance's background parts: one ``Service`` protocol, one periodic loop.

``Appliance.start`` starts its services in order and ``stop`` stops them in reverse
(app.py); each service is anything with a ``name``, ``start()`` and ``stop()``.
``PeriodicTask`` is the one thread loop behind the parts that work now and then
(forwarding, the inbox, worklist expiry, the audit's store batches): run a round,
wait, run again; ``wake`` cuts the wait short, a failed round is logged and retried,
``stop`` ends the wait at once and joins the thread.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Named:
    """A ``Service`` made of a part with start/stop but no name of its own."""

    def __init__(self, name: str, part: Any):
        self.name, self.part = name, part

    def start(self) -> None:
        self.part.start()

    def stop(self) -> None:
        self.part.stop()


class PeriodicTask:
    """Run ``fn`` in a daemon thread at start and then again and again.

    ``interval`` is the wait between rounds in seconds, or a function called after each
    round that returns it (a queue knows when its next item is due). A round that raises
    is logged, and the next one comes after ``retry_seconds`` (default: the interval).
    ``wake()`` starts the next round now; a wake during a round makes another round follow.
    ``first_after`` delays the first round (a pass that need not compete with start-up).
    """

    def __init__(self, name: str, fn: Callable[[], Any], interval: float | Callable[[], float], *,
                 retry_seconds: float | None = None, join_seconds: float = 5.0, first_after: float = 0.0):
        self.name, self.fn, self.interval = name, fn, interval
        self.retry_seconds, self.first_after = retry_seconds, first_after
        self.join_seconds = join_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called: a long round checks it to end early."""
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        if self.first_after:
            self._wake.wait(self.first_after)
        while not self._stop.is_set():
            self._wake.clear()
            failed = False
            try:
                self.fn()
            except Exception:  # noqa: BLE001 - a background loop must log and carry on, not die
                log.exception("%s failed; trying again", self.name)
                failed = True
            if self._stop.is_set():
                return
            self._wake.wait(self.retry_seconds if failed and self.retry_seconds is not None else self._interval())

    def _interval(self) -> float:
        if not callable(self.interval):
            return self.interval
        try:
            return self.interval()
        except Exception:  # noqa: BLE001 - e.g. the index is busy: look again in a minute
            log.exception("%s: cannot tell when to run next; trying again in a minute", self.name)
            return 60.0

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(self.join_seconds)
        self._thread = None
