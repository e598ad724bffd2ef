"""A tiny in-process event bus: after-commit notifications, each listener isolated.

Events only wake workers and feed metrics; durable work lives in the index. A
listener that raises is logged and skipped, so a broken listener can never fail
a C-STORE.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Callable

log = logging.getLogger(__name__)


class Events:
    def __init__(self) -> None:
        self._listeners: dict[str, list[Callable[..., Any]]] = defaultdict(list)

    def subscribe(self, name: str, listener: Callable[..., Any]) -> None:
        self._listeners[name].append(listener)

    def emit(self, name: str, **payload: Any) -> None:
        for listener in list(self._listeners.get(name, ())):
            try:
                listener(**payload)
            except Exception:  # noqa: BLE001 - isolate listeners from each other and the caller
                log.exception("listener %r for event %r failed", getattr(listener, "__name__", listener), name)
