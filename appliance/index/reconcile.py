"""Start-up reconciliation of the index with the archive (docs/DESIGN.md invariant 2).

It merges two lists of object ids, both sorted (the index's, read in pages, and
the archive's listing), so memory stays bounded however many objects there are,
and decrypts nothing, so it stays fast on a big archive:

- an object no index row names is an **orphan**: a crash between the archive
  write and the index commit (never acknowledged to the sender). Above a small
  bound (``orphan_limit``) the index is what is wrong, not the writes: start-up
  stops, says what to do (``pacs-appliance index rebuild``; on PostgreSQL: check
  ``[index] url`` or restore the database) and moves nothing. Orphans are
  quarantined, not deleted (``quarantine_orphans``: the file archive moves them to
  ``archive/orphans/<object id>``: same name, the envelope is bound to it, so
  they stay readable) and counted in the log;
- the sealed objects of a write batch that never committed (a correction killed before its one
  transaction; appliance/index/unfinished_batches.py) are discarded first: never indexed, not counted as orphans;
- a row (instance or replaced object) whose object is gone is **missing**: the
  worst thing an archive can say, so it is logged as an error with every
  affected SOP Instance UID, and returned for the caller to show.

The log carries object ids and SOP Instance UIDs only, never patient data.

When it runs. On a box of up to ``BACKGROUND_ABOVE`` objects (judged from the
index's id ranges, one index lookup) it runs before the node accepts anything,
as it always did. Above that it would hold start-up for tens of seconds (a
million objects: ~7 s to read the index's ids, ~17 s to list a warm archive,
minutes cold), so ``Reconciler`` runs it in a thread once the node listens.
Nothing it judges can be confused with a write of this run: an orphan must have
been written before the start (``written_before``: its file's mtime) and still be
named by no row when it is moved; a missing object must still be named and still
be absent (and not recycled) when it is reported. Acknowledging a new C-STORE
needs none of this (invariant 1 is about the new object alone), and an orphan, by
definition never acknowledged, may wait a minute to be moved aside. A mass of
unindexed objects found this way still stops the appliance with exit 7.

Cost, measured on the 2-core test VM with 100,000 objects: reading the index ids
0.7 s; walking the archive's two-level fan-out 1.7 s with a warm page cache and
13 s cold (it reads ~65,000 small directories), so a cold start grows by about
2 minutes per million objects (systemd's TimeoutStartSec for the unit is 10 min).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..archive import StorageArea
from ..errors import ApplianceError
from ..sortedmerge import align
from .unfinished_batches import Discarded, discard, live_ids

log = logging.getLogger(__name__)
LOG_AT_MOST = 50  # ids listed one per line in the log; all of them are in the report
# Interrupted writes leave a handful of orphans at most (one per association writing at the crash). More than
# this many, or than this share of the archive, means the index is an old copy or lost rows: stop and ask.
ORPHANS_AT_MOST = 20
ORPHAN_SHARE_AT_MOST = 0.01
# Up to this many objects (as the index's id ranges tell) reconciliation runs before the node listens.
BACKGROUND_ABOVE = 50_000


class TooManyOrphans(ApplianceError):
    exit_code = 7  # the index needs a rebuild: systemd does not restart on it (RestartPreventExitStatus)


def orphan_limit(archived: int) -> int:
    return max(ORPHANS_AT_MOST, int(archived * ORPHAN_SHARE_AT_MOST))


@dataclass
class Missing:
    sop_uid: str
    object_id: str
    replaced: bool  # a ReplacedObject row (an older version), not the current instance


@dataclass
class ReconcileReport:
    indexed: int = 0  # object ids named by the index
    archived: int = 0  # objects found in the archive before reconciling
    orphans: list[str] = field(default_factory=list)  # quarantined (archive/orphans/)
    missing: list[Missing] = field(default_factory=list)
    discarded: list[Discarded] = field(default_factory=list)  # unfinished write batches (corrections)

    @property
    def clean(self) -> bool:
        return not self.orphans and not self.missing


def _merge(named: Iterator, present: Iterator[str], report: ReconcileReport) -> list[str]:
    """Walk both sorted id streams side by side; fill in the counts and missing; return the orphans."""
    orphans = []
    for item, oid in align(named, present, left_key=lambda o: o.object_id):
        if item is None:
            report.archived += 1
            orphans.append(oid)
            continue
        report.indexed += 1
        if oid is not None:
            report.archived += 1
        else:
            report.missing.append(Missing(item.sop_uid, item.object_id, item.replaced))
    return orphans


class Stopped(Exception):
    """The appliance is stopping: a background reconciliation gives up and moves nothing."""


def reconcile(archive: StorageArea, index, idle: bool = True, *, written_before: float | None = None,
              stopping: Callable[[], bool] = lambda: False) -> ReconcileReport:
    """Compare index and archive; move orphans aside; report both kinds of disagreement.

    ``idle``: no other process is writing a batch (held with unfinished_batches.none_in_flight around this
    call), so unfinished write batches are discarded; otherwise the objects of recorded batches are left alone.
    ``written_before`` (the archive's ``clock()``) is for a run beside live writes (``Reconciler``): only objects
    written before it can be orphans, and each disagreement is checked again before it is acted on."""
    report = ReconcileReport()
    # Unfinished write batches first: discarded when none is still running, else left alone. Not orphans.
    report.discarded = discard(archive, index.db, index.writer.run) if idle else []
    in_flight = set() if idle else live_ids(index.db)

    def named():
        for n, item in enumerate(index.objects.named()):
            if n % 1000 == 0 and stopping():
                raise Stopped
            yield item

    # Both lists come sorted by object id, so a merge compares them in bounded memory (no set of every id).
    orphans = _merge(named(), iter(archive.list_ids()), report)
    if in_flight:
        orphans = [o for o in orphans if o not in in_flight]
    if written_before is not None:
        orphans = [oid for oid in orphans if _written_before(archive, oid, written_before)]
    if len(orphans) > orphan_limit(report.archived):
        raise TooManyOrphans(
            f"{len(orphans)} of {report.archived} archive objects have no index row: far more than writes "
            "interrupted before their commit leave, so the index is an old copy or has lost rows. Nothing was "
            f"moved. {index.db.remedy}")
    if written_before is not None:  # beside live writes: only what still disagrees now
        orphans = [oid for oid in orphans if not index.objects.names(oid)]
        report.missing = [m for m in report.missing if index.objects.names(m.object_id)
                          and not archive.exists(m.object_id) and not index.recycling.is_recycled(m.object_id)]
    if orphans:
        kept_in = archive.quarantine_orphans(orphans)
        report.orphans = orphans
        log.warning("start-up: %d archive object(s) had no index row (a write interrupted before its commit; "
                    "never acknowledged); kept in %s", len(orphans), kept_in)
        for object_id in orphans[:LOG_AT_MOST]:
            log.warning("  orphan object %s", object_id)

    if report.missing:
        log.error("start-up: %d indexed object(s) are MISSING from the archive: restore them from the backup "
                  "(`pacs-appliance verify` lists them too)", len(report.missing))
        for m in report.missing[:LOG_AT_MOST]:
            log.error("  missing object %s for %sSOP Instance UID %s", m.object_id,
                      "replaced " if m.replaced else "", m.sop_uid)
        if len(report.missing) > LOG_AT_MOST:
            log.error("  ... and %d more", len(report.missing) - LOG_AT_MOST)

    if report.clean:
        log.info("start-up: index and archive agree (%d objects)", report.archived)
    return report


def _written_before(archive: StorageArea, object_id: str, moment: float) -> bool:
    try:
        return archive.written_at(object_id) < moment
    except FileNotFoundError:
        return False  # gone since it was listed: deleted by its owner, not an orphan


class Reconciler:
    """Start-up reconciliation, before the node listens on a small box and in a thread on a big one."""

    name = "reconciliation"

    def __init__(self, archive: StorageArea, index, on_failure: Callable[[BaseException], None],
                 on_done: Callable[[ReconcileReport], None] = lambda report: None,
                 background_above: int = BACKGROUND_ABOVE):
        self.archive, self.index = archive, index
        self.on_failure = on_failure  # called with TooManyOrphans found in the background (serve stops, exit 7)
        self.on_done = on_done  # called with the report of a background run
        self.background = index.objects.estimate() > background_above
        self.report: ReconcileReport | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_now(self, idle: bool = True) -> ReconcileReport | None:
        """On a small box: reconcile now (raises TooManyOrphans). On a big one: discard unfinished write batches
        now (``idle``: none is in flight; see ``reconcile``) and remember when, for ``start``."""
        if self.background:
            self._started_at = self.archive.clock()  # what the file clock says now: later writes read later
            self._discarded = discard(self.archive, self.index.db, self.index.writer.run) if idle else []
            return None
        self.report = reconcile(self.archive, self.index, idle)
        self.done.set()
        return self.report

    def start(self) -> None:
        if not self.background or self._thread is not None:
            return
        log.info("start-up: reconciling index and archive in the background (a large box: %d objects or more)",
                 BACKGROUND_ABOVE)
        self._thread = threading.Thread(target=self._run, name="reconciliation", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            # batches were settled before the listener; those recorded since are live writes, left alone
            self.report = reconcile(self.archive, self.index, idle=False, written_before=self._started_at,
                                    stopping=self._stop.is_set)
            self.report.discarded = self._discarded
            self.on_done(self.report)
            log.info("start-up: background reconciliation finished in %.1f s", time.monotonic() - started)
        except Stopped:
            log.info("start-up reconciliation stopped before it finished (it runs again at the next start)")
        except TooManyOrphans as exc:
            log.critical("%s", exc)
            self.on_failure(exc)
        except Exception:  # noqa: BLE001 - reported; the next start tries again
            log.exception("start-up reconciliation failed; it runs again at the next start")
        finally:
            self.done.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
