"""Write batches that never committed: discarded whole, never indexed, never counted as orphans.

A correction (appliance/corrections/) seals new versions of every object of a study before the one
transaction that indexes them, and records the batch's object ids in the index first
(index/batches.py). A kill -9 in between leaves up to a few hundred sealed, unindexed objects: far more
than reconciliation's orphan bound, and not orphans of an acknowledged write but half of a correction
nobody was told had happened. Start-up reconciliation and the index rebuild call ``discard`` first:
the objects of each unfinished batch are deleted from the archive and the batch forgotten, so the
study is exactly as before the correction (run it again to apply it).

A CLI correction may run beside a server, so "unfinished" must also mean "not still running": a
process writing a batch holds ``batches.lock`` in the data directory shared (``in_flight``) from before
it records the batch until its transaction ends; ``discard`` discards only while it can hold that lock
exclusively (nothing in flight) and otherwise leaves every recorded batch alone, its objects neither
discarded nor orphans (``live_ids``).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import batches as batch_rows

log = logging.getLogger(__name__)
LOCK_NAME = "batches.lock"  # in the data directory


@dataclass(frozen=True)
class Discarded:
    batch: str
    kind: str
    objects: int  # sealed objects of the batch that were in the archive (deleted)
    object_ids: frozenset[str]


@contextlib.contextmanager
def in_flight(lock_path: Path | None) -> Iterator[None]:
    """Held (shared, waiting if start-up is discarding) while a batch is being written."""
    if lock_path is None:
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def none_in_flight(lock_path: Path | None) -> Iterator[bool]:
    """True (and no batch can start until the block ends) when no process is writing a batch."""
    if lock_path is None:
        yield True
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def live_ids(db) -> set[str]:
    """Object ids of every recorded batch (a few hundred per correction running)."""
    return {oid for ids in batch_rows.unfinished(db).values() for oid in ids}


def discard(archive, db, write=None) -> list[Discarded]:
    """Delete the sealed objects of every unfinished batch, then forget the batch. ``write(fn)`` runs ``fn``
    in a committed transaction (an Index's ``writer.run``; default: ``db.atomic``). Only call while
    ``none_in_flight``."""
    pending = batch_rows.unfinished(db)
    if not pending:
        return []
    out = []
    for batch, ids in pending.items():
        kind = batch_rows.kind_of(db, batch)
        deleted = archive.delete_many(ids)  # objects first: a kill here leaves the batch to discard again

        def forget(batch=batch):
            batch_rows.finish(db, batch)

        if write is not None:
            write(forget)
        else:
            with db.atomic():
                forget()
        out.append(Discarded(batch, kind, deleted, frozenset(ids)))
        log.warning("an interrupted %s (batch %s) had sealed %d of its %d new object(s) and never committed: "
                    "discarded, the images are as before it (run it again to apply it)", kind, batch, deleted,
                    len(ids))
    return out


def settle_for_rebuild(archive, db, present: set[str]) -> list[Discarded]:
    """The batches a rebuild's starting index names (call inside a transaction; returns those set aside).

    That index is a snapshot, perhaps taken while a correction was sealing, so a batch it names may have
    committed afterwards. A batch whose every object is in the archive was sealed whole: its objects are
    recorded like any other (the correction whole, never half). One with objects missing never finished:
    the ones there are moved aside with the orphans (kept, readable, never indexed) and taken out of
    ``present``. Either way the batch is forgotten. (A rebuild over a sound index discards its
    unfinished batches with ``discard`` before snapshotting it, so this only meets older snapshots.)"""
    out = []
    for batch, ids in batch_rows.unfinished(db).items():
        kind = batch_rows.kind_of(db, batch)
        there = [oid for oid in ids if oid in present]
        if len(there) < len(ids) and there:
            kept_in = archive.quarantine_orphans(there)
            present.difference_update(there)
            out.append(Discarded(batch, kind, len(there), frozenset(there)))
            log.warning("index rebuild: an interrupted %s (batch %s) had sealed %d of its %d new object(s): "
                        "not indexed, kept in %s", kind, batch, len(there), len(ids), kept_in)
        batch_rows.finish(db, batch)
    return out
