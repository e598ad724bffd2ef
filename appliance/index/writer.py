"""The single writer: every change to the index runs here, one transaction at a time, on the
writer's own connection.

Callers submit a function and wait for its result. Whoever holds the writer's lock writes, on the
writer's connection (connections.py), and nobody else:

- a submitter finding the writer idle (the lock free, nothing queued) and itself outside any
  transaction takes the lock and runs its function itself, in one transaction (``BEGIN IMMEDIATE``
  on SQLite). One association storing instances thus pays no hand-over to the writer thread and
  back per instance (two thread switches, each a wait for a core on a busy box).
- otherwise it queues the function. The writer thread takes whatever is queued, runs each function
  in its own savepoint inside one write transaction and commits once (group commit): four
  associations storing at once share one WAL fsync instead of queueing for four.

A function that raises rolls back only its own savepoint, and its caller gets the exception; the
others commit. A failed commit fails every function of its transaction. A result is handed over
only once its transaction committed.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

from peewee import Database, _ConnectionState

log = logging.getLogger(__name__)
_STOP = object()
MAX_BATCH = 64


class Writer:
    def __init__(self, db: Database):
        self.db = db
        self._queue: queue.Queue = queue.Queue()  # unfinished_tasks: queued or in the writer thread's batch
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # held by whoever writes: the writer thread or one submitter
        self._conn = _ConnectionState()  # the writer's connection and transactions, used under _lock

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="index-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish everything already submitted, then stop."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    @property
    def is_running(self) -> bool:
        """True when a writer thread serves submitted work (False: ``submit`` runs it on the caller's connection)."""
        return self._thread is not None

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` in a write transaction: here if the writer is idle (the future is then done on
        return), else queued for the writer thread. For a caller about to wait; one that does not, ``post``."""
        future: Future = Future()
        if self._thread is None:
            # Not serving (CLI commands, tests): run inline in one transaction, on the caller's connection.
            # The result is handed over only once the commit succeeded (a full disk fails the commit).
            try:
                with self.db.atomic(*self.db.write_lock):
                    result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)
            else:
                future.set_result(result)
            return future
        if self._take_idle():
            try:
                with self.db._state.borrow(self._conn):
                    self._hand(self._transaction([(fn, future)]))
            finally:
                self._lock.release()
            return future
        self._queue.put((fn, future))
        return future

    def post(self, fn: Callable[[], Any]) -> Future:
        """Queue ``fn`` for the writer thread, never run here: for a caller that does not wait (an audit
        entry, a token's last use), so that it does not pay a commit's fsync on its own thread."""
        if self._thread is None:
            return self.submit(fn)
        future: Future = Future()
        self._queue.put((fn, future))
        return future

    def read(self, fn: Callable[[], Any]) -> Any:
        """Run the read ``fn`` on the writer's connection if the writer is idle, else on the caller's own.
        For a read that every write is preceded by (ingest's duplicate lookup): on SQLite a connection's
        page cache is dropped whenever another connection committed, so a reader's own connection
        decrypts its pages afresh after each write, while the writer's keeps them. ``fn`` reads to the end
        or closes its cursors (records._one does): the writer's connection must not keep a read open."""
        if self._thread is None or not self._take_idle():
            return fn()
        try:
            with self.db._state.borrow(self._conn):
                return fn()
        finally:
            self._lock.release()

    def run(self, fn: Callable[[], Any]) -> Any:
        """Submit ``fn`` and wait for its committed result."""
        if self._thread is not None and self.db._state.borrowing():
            raise RuntimeError("a write run from inside a write would wait for itself: call the function "
                               "directly (it already runs in the writer's transaction)")
        return self.submit(fn).result()

    def _take_idle(self) -> bool:
        """Take the lock if the writer is idle and the caller may write here; False: queue instead.

        Not here when something is queued or in the writer thread's batch (it keeps its turn, and the
        caller joins the next group commit), nor when the caller is inside a transaction of its own
        (its thread-local state stays as it is)."""
        if self._queue.unfinished_tasks or self.db.in_transaction():
            return False
        if not self._lock.acquire(blocking=False):
            return False
        if self._queue.unfinished_tasks:  # queued meanwhile
            self._lock.release()
            return False
        return True

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            with self._lock:  # a submitter writing inline finishes first; what queued meanwhile joins
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(i is _STOP for i in batch)
                work = [i for i in batch if i is not _STOP]
                with self.db._state.borrow(self._conn):
                    outcomes = self._transaction(work) if work else []
                    if stop:
                        self.db.close()
            for _ in batch:
                self._queue.task_done()
            self._hand(outcomes)
            if stop:
                return

    def _transaction(self, work: list) -> list[tuple[Future, bool, Any]]:
        """Run ``work`` ((fn, future) pairs) in one write transaction: (future, ok, value or exception) each."""
        if len(work) == 1:  # the usual case with one sender: no savepoint needed (two statements fewer)
            fn, future = work[0]
            try:
                with self.db.atomic(*self.db.write_lock):
                    value = fn()
            except Exception as exc:  # noqa: BLE001 - rolled back (or the commit failed): handed to the caller
                return [(future, False, exc)]
            return [(future, True, value)]
        outcomes: list[tuple[Future, bool, Any]] = []
        try:
            with self.db.atomic(*self.db.write_lock):
                for fn, future in work:
                    try:
                        with self.db.atomic():  # a savepoint
                            outcomes.append((future, True, fn()))
                    except Exception as exc:  # noqa: BLE001 - handed to the caller
                        outcomes.append((future, False, exc))
        except Exception as exc:  # the commit itself failed: nothing in the batch is durable
            log.error("index commit failed: %s", exc)
            return [(future, False, exc) for _fn, future in work]
        return outcomes

    @staticmethod
    def _hand(outcomes: list[tuple[Future, bool, Any]]) -> None:
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
