"""peewee's connection state with one shared state that a thread can borrow: the writer's.

peewee keeps a database's connection, open transactions and commit callbacks per thread. Both
backends replace that with ``ThreadConnections``: per thread as before, except that a thread
holding the writer's lock (writer.py) works on the writer's own state, connection included, until
it gives it back. So a submitting thread can run its write itself on the writer's connection (no
hand-over to the writer thread, and SQLite keeps one warm page cache for writing) while writes
stay serial, and the caller's own connection and transactions are left as they were.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from peewee import _ConnectionLocal, _ConnectionState


class ThreadConnections:
    def __init__(self):
        object.__setattr__(self, "_own", _ConnectionLocal())  # this thread's own, as peewee's
        object.__setattr__(self, "_borrowed", threading.local())

    def _current(self) -> _ConnectionState:
        return getattr(self._borrowed, "state", None) or self._own

    def __getattr__(self, name):  # conn, closed, transactions, reset(), ...: peewee's interface
        return getattr(self._current(), name)

    def __setattr__(self, name, value):
        setattr(self._current(), name, value)

    def borrowing(self) -> bool:
        """True while this thread works on a borrowed state."""
        return getattr(self._borrowed, "state", None) is not None

    @contextmanager
    def borrow(self, state: _ConnectionState) -> Iterator[None]:
        """This thread uses ``state`` (its connection, its transactions) until the block ends. The caller
        makes sure no other thread uses it meanwhile (the writer's lock)."""
        if self.borrowing():
            raise RuntimeError("this thread already works on a borrowed connection")
        self._borrowed.state = state
        try:
            yield
        finally:
            self._borrowed.state = None
