"""The single writer: every change to the index runs here, in a transaction.

Callers submit a function and wait for its result. The writer thread takes
whatever is queued, runs each function in its own savepoint inside one write
transaction (the database's ``write_lock``: ``BEGIN IMMEDIATE`` on SQLite) and
commits once (group commit): four associations storing at once share one WAL
fsync instead of queueing for four.
A function that raises rolls back only its own savepoint, and its caller gets
the exception; the others commit.
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

from peewee import Database

log = logging.getLogger(__name__)
_STOP = object()
MAX_BATCH = 64


class Writer:
    def __init__(self, db: Database):
        self.db = db
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

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
        """True when a writer thread runs submitted work (False: ``submit`` runs it inline)."""
        return self._thread is not None

    def submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        if self._thread is None:
            # Not serving (CLI commands, tests): run inline in one transaction.
            # The result is handed over only once the commit succeeded (a full disk fails the commit).
            try:
                with self.db.atomic(*self.db.write_lock):
                    result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)
            else:
                future.set_result(result)
            return future
        self._queue.put((fn, future))
        return future

    def run(self, fn: Callable[[], Any]) -> Any:
        """Submit ``fn`` and wait for its committed result."""
        return self.submit(fn).result()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(i is _STOP for i in batch)
            work = [i for i in batch if i is not _STOP]
            if work:
                self._commit(work)
            if stop:
                self.db.close()
                return

    def _commit(self, work: list) -> None:
        if len(work) == 1:  # the usual case with one sender: no savepoint needed (two statements fewer)
            fn, future = work[0]
            try:
                with self.db.atomic(*self.db.write_lock):
                    value = fn()
            except Exception as exc:  # noqa: BLE001 - rolled back (or the commit failed): handed to the caller
                future.set_exception(exc)
            else:
                future.set_result(value)
            return
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
            for _fn, future in work:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
