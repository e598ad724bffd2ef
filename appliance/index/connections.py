"""peewee's connection state with one shared state that a thread can borrow: the writer's.

peewee keeps a database's connection, open transactions and commit callbacks per thread. Both
backends replace that with ``ThreadConnections``: per thread as before, except that a thread
holding the writer's lock (writer.py) works on the writer's own state, connection included, until
it gives it back. So a submitting thread can run its write itself on the writer's connection (no
hand-over to the writer thread, and SQLite keeps one warm page cache for writing) while writes
stay serial, and the caller's own connection and transactions are left as they were.

Borrowing swaps the state's fields into the thread's own and back (a copy of five references), so
that peewee's every access stays a plain thread-local attribute (a proxy deciding per access cost
~7 us per statement).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from peewee import _ConnectionLocal, _ConnectionState

_FIELDS = ("closed", "conn", "ctx", "transactions", "commit_callbacks")  # peewee's _ConnectionState


class ThreadConnections(_ConnectionLocal):
    _lent: _ConnectionState | None = None  # per thread: the state borrowed now

    def borrowing(self) -> bool:
        """True while this thread works on a borrowed state."""
        return self._lent is not None

    @contextmanager
    def borrow(self, state: _ConnectionState) -> Iterator[None]:
        """This thread uses ``state`` (its connection, its transactions) until the block ends. The caller
        makes sure no other thread uses it meanwhile (the writer's lock)."""
        if self._lent is not None:
            raise RuntimeError("this thread already works on a borrowed connection")
        own = [getattr(self, f) for f in _FIELDS]
        for f in _FIELDS:
            setattr(self, f, getattr(state, f))
        self._lent = state
        try:
            yield
        finally:
            for f in _FIELDS:  # connect(), close() and reset() replace fields: keep what they left
                setattr(state, f, getattr(self, f))
            for f, value in zip(_FIELDS, own):
                setattr(self, f, value)
            self._lent = None
