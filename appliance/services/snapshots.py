"""Sealed local snapshots of the index, taken now and then (issue 15; restored by appliance/index/rebuild.py).

SQLite's online backup API copies the live index in one consistent step
(index/snapshot.py, the same copy the offsite backup takes) into a temp file
encrypted with the index key; the archive seals it like an object into its
snapshot shelf and keeps the newest few generations. Taken at start, every
``[index] snapshot_hours``, and before a schema migration (app.Parts.index).
Cost: bench/README.md.
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


class IndexSnapshots:
    """A ``lifecycle.Service``: a snapshot at start, then every ``interval_hours``."""

    name = "index snapshots"

    def __init__(self, index: Index, index_key: bytes, archive: Archive, work_dir: Path, keep: int,
                 interval_hours: float):
        self.index, self.index_key, self.archive = index, index_key, archive
        self.work_dir, self.keep = Path(work_dir), keep
        self._task = PeriodicTask(self.name, self.take, interval_hours * 3600, retry_seconds=600)

    def take(self) -> Snapshot:
        return take(self.index.db, self.index_key, self.archive, self.work_dir, self.keep)

    def start(self) -> None:
        self._task.start()

    def stop(self) -> None:
        self._task.stop()
