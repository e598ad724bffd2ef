"""peewee's connection state with one shared state that a thread can borrow (the writer's), and
connections that outlive their thread.

peewee keeps a database's connection, open transactions and commit callbacks per thread. Both
backends replace that with ``ThreadConnections``: per thread as before, except that

- a thread holding the writer's lock (writer.py) works on the writer's own state, connection
  included, until it gives it back. So a submitting thread can run its write itself on the writer's
  connection (no hand-over to the writer thread, and SQLite keeps one warm page cache for writing)
  while writes stay serial, and the caller's own connection and transactions are left as they were.
  Borrowing swaps the state's fields into the thread's own and back (a copy of five references), so
  that peewee's every access stays a plain thread-local attribute (a proxy deciding per access cost
  ~7 us per statement).
- a thread's own connection, when the thread ends, is kept (``IdleConnections``, a few) for the next
  thread that connects instead of being closed. pynetdicom runs every association on a new thread,
  and each one reads the index (the association policy, then its query): opening a SQLCipher
  connection and reading its schema again cost ~0.75 ms of every association's set-up (bench/README.md,
  "Session 8"). A connection is kept only when it is open and outside any transaction.
"""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from peewee import _ConnectionLocal, _ConnectionState

log = logging.getLogger(__name__)
_FIELDS = ("closed", "conn", "ctx", "transactions", "commit_callbacks")  # peewee's _ConnectionState
KEEP_IDLE = 4  # connections kept for new threads: about the associations a small clinic's box serves at once


class IdleConnections:
    """Open connections of ended threads, waiting for a new thread (shared by all of a database's threads).

    ``reusable(conn)``: whether ``conn`` is open and outside any transaction (the backend knows how to ask).
    One that is not kept is closed (``conn.close()``: both drivers')."""

    def __init__(self, reusable: Callable[[Any], bool], keep: int = KEEP_IDLE):
        self.keep = keep
        self._reusable = reusable
        self._idle: list = []
        self._lock = threading.Lock()

    def take(self) -> Any | None:
        """An idle connection for this thread, or None (then the caller opens one)."""
        with self._lock:
            return self._idle.pop() if self._idle else None

    def give_back(self, conn: Any) -> None:
        try:
            kept = self._reusable(conn)
        except Exception:  # noqa: BLE001 - a closed or broken connection: not kept
            kept = False
        if kept:
            with self._lock:
                kept = len(self._idle) < self.keep
                if kept:
                    self._idle.append(conn)
        if not kept:
            self._close_quietly(conn)

    def close_all(self) -> None:
        """Close every idle connection (the index is closing)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close_quietly(conn)

    def _close_quietly(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception as exc:  # noqa: BLE001 - at a thread's end nobody could act on it
            log.debug("closing an index connection of an ended thread failed: %s", exc)


class _HandBack:
    """Held in a thread's local state with its connection: when the thread ends and its local state is
    dropped, gives the connection to the idle ones."""

    __slots__ = ("idle", "conn")

    def __init__(self, idle: IdleConnections, conn: Any):
        self.idle, self.conn = idle, conn

    def __del__(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            self.idle.give_back(conn)


class ThreadConnections(_ConnectionLocal):
    _lent: _ConnectionState | None = None  # per thread: the state borrowed now
    _hand_back: _HandBack | None = None  # per thread: gives its own connection back when the thread ends

    def __init__(self, idle: IdleConnections | None = None, **kwargs):
        super().__init__(**kwargs)  # run in every thread (threading.local): ``idle`` is the one shared pool
        self.idle = idle

    def set_connection(self, conn) -> None:
        super().set_connection(conn)
        if self._lent is None and self.idle is not None:  # this thread's own connection, not the writer's
            self._detach()
            self._hand_back = _HandBack(self.idle, conn)

    def reset(self) -> None:
        super().reset()
        if self._lent is None:
            self._detach()  # closed (or being replaced) by peewee: nothing to give back

    def _detach(self) -> None:
        if self._hand_back is not None:
            self._hand_back.conn = None
            self._hand_back = None

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
