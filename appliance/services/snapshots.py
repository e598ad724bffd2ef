"""Sealed local snapshots of the index, taken now and then (issue 15; restored by appliance/index/rebuild.py).

SQLite's online backup API copies the live index in one consistent step
(index/snapshot.py, the same copy the offsite backup takes) into a temp file
encrypted with the index key; the archive seals it like an object into its
snapshot shelf and keeps the newest few generations. Taken every
``[index] snapshot_hours`` (counted from the newest generation on the shelf, so a
restart neither adds one nor resets the clock), after every recycling run and before a
schema migration (app.Parts.index). A box with no generation yet takes one at start.
An overdue one after a restart waits ``START_GRACE_SECONDS``: at 1M instances a
snapshot copies and seals ~400 MB, which must not compete with the first
associations (bench/README.md, "The appliance at scale"). The loss window stays
what it is while the box runs: at most ``snapshot_hours`` of users, peers, worklist
and settings (the images themselves are never in it: a rebuild reads them back).
"""
from __future__ import annotations

import fcntl
import logging
import os
import secrets
import time
from pathlib import Path

from ..archive import Archive
from ..archive.fsutil import claim_abandoned
from ..archive.snapshots import Snapshot
from ..index import Index, utcnow
from ..index import snapshot as index_snapshot
from ..lifecycle import PeriodicTask

log = logging.getLogger(__name__)
START_GRACE_SECONDS = 600.0  # an overdue snapshot after a start waits this long (see above)


def _work_files(lock: Path) -> tuple[Path, ...]:
    """The copy a take makes beside its lock file (and SQLite's journal of it), then the lock file itself."""
    tmp = lock.with_suffix(".tmp")
    return tmp, tmp.with_name(tmp.name + "-journal"), lock


def clean_stale(work_dir: Path) -> int:
    """Remove the copies of takes that did not finish (the process stopped or died mid-way); return how many.

    A take holds an exclusive flock on its ``.lock`` file from before its copy exists until after it is
    gone, and the kernel drops it when the process dies: a lock file we can lock, or a copy without one,
    is left over. A take running now in another process (``pacs-appliance index snapshot``) is left alone."""
    removed = 0
    for lock in Path(work_dir).glob(".index-snapshot-*.lock"):
        with claim_abandoned(lock) as abandoned:
            if abandoned:  # else still being taken
                for path in _work_files(lock):
                    path.unlink(missing_ok=True)
                removed += 1
    for tmp in Path(work_dir).glob(".index-snapshot-*.tmp*"):
        lock = Path(work_dir) / (tmp.name.split(".tmp")[0] + ".lock")
        if not lock.exists():  # an orphan copy (the lock goes last)
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _hold(lock: Path) -> int:
    """An open, flocked ``lock`` file, still the one at that path (clean_stale may remove a new one it
    could lock before we did: then make another)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def take(db, index_key: bytes, archive: Archive, work_dir: Path, keep: int) -> Snapshot:
    """Copy the index database ``db`` (a consistent state), seal it into the archive, drop old generations."""
    started = time.monotonic()
    taken_at = utcnow()
    # periodic and after-recycling may overlap: a name of its own; the flock tells clean_stale it is alive
    lock = Path(work_dir) / f".index-snapshot-{secrets.token_hex(4)}.lock"
    tmp = _work_files(lock)[0]
    fd = _hold(lock)
    try:
        index_snapshot.take(db, index_key, tmp)
        snap = archive.snapshots.put(tmp, taken_at)
    finally:
        for path in _work_files(lock):
            path.unlink(missing_ok=True)
        os.close(fd)
    dropped = archive.snapshots.prune(keep)
    log.info("index snapshot %s taken (%d KiB sealed, %.1f s; %d older generation(s) dropped)",
             snap.name, snap.size // 1024, time.monotonic() - started, len(dropped))
    return snap


def first_delay(newest: Snapshot | None, now, interval: float, grace: float = START_GRACE_SECONDS) -> float:
    """Seconds from a start to the first snapshot: none on the shelf, at once; else when the newest
    generation is ``interval`` old, but not before ``grace`` (nor later than ``interval``, should the
    clock have gone back since it was taken)."""
    if newest is None:
        return 0.0
    age = (now - newest.taken_at).total_seconds()
    return min(max(interval - age, grace), interval)


class IndexSnapshots:
    """A ``lifecycle.Service``: a snapshot every ``interval_hours`` since the newest one (``first_delay``)."""

    name = "index snapshots"

    def __init__(self, index: Index, index_key: bytes, archive: Archive, work_dir: Path, keep: int,
                 interval_hours: float):
        self.index, self.index_key, self.archive = index, index_key, archive
        self.work_dir, self.keep = Path(work_dir), keep
        self.interval = interval_hours * 3600
        self._task = PeriodicTask(self.name, self.take, self.interval, retry_seconds=600)

    def take(self) -> Snapshot:
        return take(self.index.db, self.index_key, self.archive, self.work_dir, self.keep)

    def start(self) -> None:
        removed = clean_stale(self.work_dir)
        if removed:
            log.info("start-up: %d unfinished index snapshot copy(ies) removed", removed)
        shelf = self.archive.snapshots.list()
        self._task.first_after = first_delay(shelf[0] if shelf else None, utcnow(), self.interval)
        if self._task.first_after:
            log.info("next index snapshot in %.0f min (the newest is %s)", self._task.first_after / 60, shelf[0].name)
        self._task.start()

    def stop(self) -> None:
        self._task.stop()
