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

import logging
import secrets
import time
from pathlib import Path

from ..archive import Archive
from ..archive.snapshots import Snapshot
from ..index import Index, utcnow
from ..index import snapshot as index_snapshot
from ..lifecycle import PeriodicTask

log = logging.getLogger(__name__)
START_GRACE_SECONDS = 600.0  # an overdue snapshot after a start waits this long (see above)


def take(db, index_key: bytes, archive: Archive, work_dir: Path, keep: int) -> Snapshot:
    """Copy the index database ``db`` (a consistent state), seal it into the archive, drop old generations."""
    started = time.monotonic()
    taken_at = utcnow()
    tmp = Path(work_dir) / f".index-snapshot-{secrets.token_hex(4)}.tmp"  # periodic and after-recycling may overlap
    try:
        index_snapshot.take(db, index_key, tmp)
        snap = archive.snapshots.put(tmp, taken_at)
    finally:
        tmp.unlink(missing_ok=True)
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
        shelf = self.archive.snapshots.list()
        self._task.first_after = first_delay(shelf[0] if shelf else None, utcnow(), self.interval)
        if self._task.first_after:
            log.info("next index snapshot in %.0f min (the newest is %s)", self._task.first_after / 60, shelf[0].name)
        self._task.start()

    def stop(self) -> None:
        self._task.stop()
