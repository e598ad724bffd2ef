"""Pruning ``archive/orphans/``: objects written by a store that a crash cut short before its index
commit (never acknowledged to the sender; start-up reconciliation moves them there).

One file per interrupted write would otherwise pile up forever. They are kept
``keep_days`` after they were written (file mtime: objects are written once), long
enough for an admin to look at one after a crash, then deleted with a log line.
They are sealed like every object, so keeping them leaks nothing but their count.
"""
from __future__ import annotations

import logging
import os
import time

from .fsutil import fsync_dir
from .store import OBJECT_ID, ORPHANS_DIR, Archive  # ORPHANS_DIR: where quarantine_orphans moves them

log = logging.getLogger(__name__)


def prune_orphans(archive: Archive, keep_days: float, now: float | None = None) -> int:
    """Delete orphans older than ``keep_days`` (0 or less: keep them all); return how many went."""
    folder = archive._root / ORPHANS_DIR  # this package owns the layout
    if keep_days <= 0 or not folder.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - keep_days * 86400
    removed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if OBJECT_ID.match(entry.name) and entry.is_file(follow_symlinks=False) \
                        and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
    if removed:
        fsync_dir(folder)
        log.info("pruned %d orphan object(s) older than %g days from %s (writes interrupted before their "
                 "index commit; never acknowledged)", removed, keep_days, folder)
    return removed
