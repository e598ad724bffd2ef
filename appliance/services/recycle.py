"""Storage recycling: free disk space by deleting studies whose only other copy is confirmed offsite.

Off by default (``[storage] recycle``). When free space on the archive's file
system drops below ``recycle_free_below_mb`` (checked every
``recycle_check_minutes`` and as images arrive), studies are deleted from the
box, least recently *used* first, until ``recycle_target_free_mb`` is free.
The store-refusal reserve (``reserve_mb``) lies below both, so recycling gets
its chance before modalities are turned away.

Which studies, in which order
-----------------------------
- A study is **eligible** only if every one of its objects (current instances,
  and older versions kept as replaced objects) is confirmed offsite: uploaded
  to the configured target *and* listed by a manifest there (the definition of
  ``BackupService.is_offsite``; docs/DESIGN.md invariant 6). One object not yet
  offsite keeps the whole study, and the reason is reported ("2 of 12 objects
  not yet offsite"). So does a pending forwarding job (the object must still
  be sent to a peer).
- **Last use** = the later of the newest instance's arrival and the last
  time anyone opened it, as the audit log records it (viewer, export, C-MOVE,
  C-GET, DICOMweb retrieve). A prior that keeps being re-read stays; StudyDate
  alone would recycle exactly those priors. Studies used within
  ``recycle_min_age_days`` are never recycled.
- Oldest last use first, until the target is met.

Deletion order, and why it is crash-safe
----------------------------------------
1. One transaction on the index writer: re-check that every object is offsite
   (the plan may be minutes old and an instance may have arrived since),
   record the study in ``recycled_study`` and each object in
   ``recycled_object`` with ``purged_at`` NULL (the intent: "this file is to
   be deleted"), delete the study's rows (counts kept right, an emptied
   patient removed) and write the audit entry, all committed together.
2. Delete the archive files, then stamp ``purged_at``.

The SQL lives in index/recycling.py (``index.recycling``); this module decides.

A kill between 1 and 2 leaves files that no instance row names, which start-up
reconciliation would call orphans. ``finish_interrupted`` runs before
reconciliation (``Appliance.start``) and at each recycling run: it deletes the
files of ``recycled_object`` rows whose ``purged_at`` is NULL. The other order
(files first) is unsafe: a kill in between would leave index rows pointing at
nothing, the one thing an archive must never show.

A retrieval already under way when its study is recycled (a C-MOVE, a viewer) fails for the
objects deleted under it; keeping recently used studies makes that unlikely. Studies with
pending forwarding jobs are kept until the jobs are sent (or fail for good).

What keeps the offsite copy
---------------------------
``recycled_object`` rows are listed by the backup as wanted objects
(index/snapshot.py), so the retention period never deletes them offsite:
recycled objects stay on the target until the study is restored. A disaster
restore does not download them (backup/restore.py) but keeps these rows, so
``storage restore`` works on the new box too.

Restore (``pacs-appliance storage restore STUDY_UID``) downloads each object
from the target (recorded per study) into the archive's ``restoring`` staging
folder, checks every tag (backup/fetch.py, the same code as a disaster
restore), parses it, and then, in one transaction, adopts it into the archive
under its own object id, indexes it again and removes the ``recycled_*`` rows: the
study is back byte for byte, and because its object ids did not change the
backup sends nothing again. The restored study counts as just received, so it is
not recycled again for ``recycle_min_age_days``.

Logs name study UIDs and counts only; patient IDs go to the audit log alone.
"""
from __future__ import annotations

import bisect
import contextlib
import datetime
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..archive import StorageArea
from ..archive.fsutil import try_lock
from ..errors import ApplianceError, ConfigError, DiskFull, IntegrityError, NotFound
from ..index import utcnow
from ..index.recycling import Kept
from ..lifecycle import PeriodicTask

log = logging.getLogger(__name__)
MiB = 1 << 20
# Audit actions that mean "somebody opened this study" (see web/viewer, dicom/move.py, get.py, dicomweb).
ACCESS_ACTIONS = ("study.view", "study.export", "dicom.move", "dicom.get", "dicomweb.retrieve")
WAKE_CHECK_SECONDS = 5.0  # free space is looked at on arrivals at most this often
# A run holds at most this many studies chosen to recycle (then reads the index again for more), and lists
# at most BLOCKED_LISTED of those kept: its memory does not grow with the index.
CHOSEN_MAX = 1000
BLOCKED_LISTED = 1000
STUCK_RETRY_SECONDS = 600.0  # after a run that could not meet the target, arrivals wake it no sooner


class RecycleBusy(ApplianceError):
    exit_code = 6


@dataclass(frozen=True)
class RecycleSettings:
    enabled: bool
    free_below: int  # bytes
    target_free: int
    min_age: datetime.timedelta
    check_seconds: float
    reserve: int

    @classmethod
    def from_config(cls, config) -> "RecycleSettings":
        s = config.storage
        settings = cls(bool(s.recycle), s.recycle_free_below_mb * MiB, s.recycle_target_free_mb * MiB,
                       datetime.timedelta(days=s.recycle_min_age_days), s.recycle_check_minutes * 60.0,
                       s.reserve_mb * MiB)
        if settings.enabled:
            if settings.free_below <= settings.reserve:
                raise ConfigError(f"[storage] recycle_free_below_mb ({s.recycle_free_below_mb}) must be above "
                                  f"reserve_mb ({s.reserve_mb}), or recycling would start only after stores "
                                  "are refused")
            if s.recycle_min_age_days < 0 or s.recycle_check_minutes <= 0:
                raise ConfigError("[storage] recycle_min_age_days cannot be negative and recycle_check_minutes "
                                  "must be above 0")
            if settings.target_free < settings.free_below:
                raise ConfigError(f"[storage] recycle_target_free_mb ({s.recycle_target_free_mb}) must be at "
                                  f"least recycle_free_below_mb ({s.recycle_free_below_mb})")
        return settings


@dataclass
class Candidate:
    """One study as recycling sees it."""

    pk: int
    study_uid: str
    accession: str
    study_date: str
    instances: int
    objects: int  # instances + replaced objects
    bytes: int  # sealed bytes on the local disk (as recorded offsite; plaintext size for objects not offsite)
    last_received: datetime.datetime | None
    last_accessed: datetime.datetime | None
    not_offsite: int = 0
    pending_forwards: int = 0
    eligible: bool = False
    reason: str = ""

    @property
    def last_used(self) -> datetime.datetime:
        return max(d for d in (self.last_received, self.last_accessed, datetime.datetime.min) if d is not None)


@dataclass
class RecycleReport:
    trigger: str
    dry_run: bool
    started_at: datetime.datetime = field(default_factory=utcnow)
    finished_at: datetime.datetime | None = None
    free_before: int = 0
    free_after: int = 0
    target_free: int = 0
    needed: bool = False  # free space was below the watermark
    recycled: list[Candidate] = field(default_factory=list)
    # Old enough, but not safely offsite: the first BLOCKED_LISTED least recently used, and those found not
    # eligible while being recycled; blocked_count counts them all.
    blocked: list[Candidate] = field(default_factory=list)
    blocked_count: int = 0
    recent: int = 0  # studies used within recycle_min_age_days
    eligible_left: int = 0
    result: str = ""

    @property
    def bytes_freed(self) -> int:
        return sum(c.bytes for c in self.recycled)

    def summary(self) -> dict:
        return {"at": self.finished_at or self.started_at, "trigger": self.trigger, "dry_run": self.dry_run,
                "studies": len(self.recycled), "bytes": self.bytes_freed, "blocked": self.blocked_count,
                "free_before": self.free_before, "free_after": self.free_after, "result": self.result}


@dataclass
class RestoreResult:
    study_uid: str
    instances: int = 0
    replaced: int = 0
    skipped: int = 0  # the same instance is live on the box already
    bytes: int = 0


def _key(c: Candidate) -> tuple[datetime.datetime, int]:
    return c.last_used, c.pk  # the recycling order: least recently used first, then the older row


class _Seen:
    recent = 0  # studies used within recycle_min_age_days


class _Smallest:
    """The first candidates in recycling order among those added, without holding the others: at most
    ``limit`` (None: no limit), and, with ``cover``, only as many as it takes for their sizes to reach
    ``cover`` bytes (none when it is 0 or less). ``seen`` counts every one added."""

    def __init__(self, limit: int | None, cover: int | None = None):
        self.limit, self.cover = limit, cover
        self.items: list[Candidate] = []
        self.bytes = self.seen = 0

    def add(self, c: Candidate) -> bool:
        """Add ``c``; False when it (or one it displaced) fell outside."""
        self.seen += 1
        bisect.insort(self.items, c, key=_key)
        self.bytes += c.bytes
        kept = True
        while self.items and ((self.limit is not None and len(self.items) > self.limit) or (
                self.cover is not None and self.bytes - self.items[-1].bytes >= self.cover)):
            self.bytes -= self.items.pop().bytes
            kept = False
        return kept


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


class Recycler:
    def __init__(self, settings: RecycleSettings, archive: StorageArea, index, backup, audit, lock_path: Path,
                 after_run: Callable[[], object] | None = None):
        self.settings = settings
        # Called after a run that recycled something: an index snapshot (appliance/services/snapshots.py), since the
        # recycled rows are what a rebuild cannot find in the archive any more.
        self.after_run = after_run
        self.archive, self.index, self.backup, self.audit = archive, index, backup, audit
        # Where restored objects wait, checked, until the transaction that indexes them adopts them: not the
        # archive's temp folder (start-up empties it) nor its objects (reconciliation would call a
        # not-yet-indexed object an orphan if a server started meanwhile).
        self.staging = archive.staging("restoring")
        self.lock_path = Path(lock_path)
        self.last: RecycleReport | None = None  # the last real (not dry) run, for the dashboard and /metrics
        self._low_space = threading.Event()  # arrivals found free space below the watermark: the next round says so
        self._task = PeriodicTask("recycler", self._round, settings.check_seconds, join_seconds=10)
        self._last_space_check = 0.0
        self._quiet_until = 0.0  # after a run that could not meet the target, arrivals do not wake it before this

    # -- the plan ----------------------------------------------------------
    def _old(self, now: datetime.datetime, target: str | None, seen: "_Seen | None" = None) -> Iterator[Candidate]:
        """The studies old enough (not used within ``recycle_min_age_days``), in primary-key order, each marked
        eligible or not with a reason, read a page at a time (index.recycling.study_pages); ``seen`` counts
        the recent ones too."""
        cutoff = now - self.settings.min_age
        for page in self.index.recycling.study_pages(target):
            old = [t for t in page if t.last_received is None or t.last_received < cutoff]
            accessed = self.index.recycling.last_access([t.study_uid for t in old], ACCESS_ACTIONS)
            if seen is not None:
                seen.recent += len(page) - len(old)
            for t in old:
                c = Candidate(t.pk, t.study_uid, t.accession, t.study_date, t.instances, t.objects, t.bytes,
                              t.last_received, accessed.get(t.study_uid), t.not_offsite, t.pending_forwards)
                if c.last_used >= cutoff:
                    if seen is not None:
                        seen.recent += 1
                    continue
                if target is None:
                    c.reason = "no backup target is configured"
                elif c.not_offsite:
                    c.reason = f"{c.not_offsite} of {_plural(c.objects, 'object')} not yet offsite"
                elif c.pending_forwards:
                    c.reason = f"{_plural(c.pending_forwards, 'instance')} still to be forwarded to a peer"
                else:
                    c.eligible, c.reason = True, f"offsite; last used {c.last_used:%Y-%m-%d}"
                yield c

    def _target(self) -> str | None:
        return self.backup.target_key() if self.backup is not None and self.backup.configured else None

    def plan(self, now: datetime.datetime | None = None, limit: int | None = None) -> tuple[list[Candidate], int, int]:
        """(the first ``limit`` (None: all) studies old enough, least recently used first, each marked eligible
        or not with a reason; how many studies are old enough; how many were kept as used recently)."""
        seen = _Seen()
        old = self._old(now or utcnow(), self._target(), seen)
        listed = _Smallest(limit)
        for c in old:
            listed.add(c)
        return listed.items, listed.seen, seen.recent

    # -- a run -------------------------------------------------------------
    def run(self, trigger: str = "schedule", actor: str = "system", dry_run: bool = False,
            progress: Callable[[str], None] | None = None) -> RecycleReport:
        """Recycle (or, ``dry_run``, say what would be recycled) until the target free space is met."""
        progress = progress or (lambda _m: None)
        report = RecycleReport(trigger, dry_run, target_free=self.settings.target_free)
        if not self.settings.enabled and not dry_run:
            report.result = "recycling is off ([storage] recycle = false)"
            return report
        fd = None if dry_run else self._lock()
        try:
            if not dry_run:
                self._finish_interrupted()
            free = report.free_before = self.archive.disk_free_bytes()
            report.needed = free < self.settings.free_below
            if not report.needed and not dry_run:  # the plan reads the whole index: only when it matters
                report.free_after, report.result = free, self._result(report, free)
                report.finished_at = utcnow()
                self.last = report
                return report
            free = self._take(report, free, actor, trigger, progress)
            report.free_after = free
            report.result = self._result(report, free)
        finally:
            if fd is not None:
                os.close(fd)
        report.finished_at = utcnow()
        if not dry_run:
            self.last = report
            if report.needed and report.free_after < self.settings.target_free:
                # Stuck (nothing more eligible): arrivals must not start a full plan every few seconds.
                self._quiet_until = time.monotonic() + min(self.settings.check_seconds, STUCK_RETRY_SECONDS)
            if report.recycled or report.needed:
                log.info("recycling (%s): %d studies, %.1f MiB freed; %s", trigger, len(report.recycled),
                         report.bytes_freed / MiB, report.result)
            if report.recycled and self.after_run is not None:
                try:
                    self.after_run()
                except Exception:  # noqa: BLE001 - the run is done; the periodic snapshot comes anyway
                    log.exception("index snapshot after recycling failed")
        return report

    def _take(self, report: RecycleReport, free: int, actor: str, trigger: str, progress) -> int:
        """Recycle eligible studies, least recently used first, until the target is met; return the free space.

        The same choice as sorting every old study, without holding them: each pass over the index keeps only
        the shortest least-recently-used prefix of eligible studies whose sizes cover the space still needed
        (at most CHOSEN_MAX), and the first pass also counts (and lists the first BLOCKED_LISTED of) the
        studies kept. A study that frees less than its recorded size, or that turns out not eligible inside
        its transaction, leaves space still needed: the next pass goes on after the last study taken."""
        now = utcnow()
        target = self._target()
        seen, blocked = _Seen(), _Smallest(BLOCKED_LISTED)
        after = None  # (last used, pk) of the last study taken: later passes start behind it
        eligible = failed = 0
        first = True
        while True:
            need = self.settings.target_free - free if report.needed else 0
            chosen, more = _Smallest(CHOSEN_MAX, cover=need), False
            for c in self._old(now, target, seen if first else None):
                if first and not c.eligible:
                    blocked.add(c)
                if not c.eligible or (after is not None and _key(c) <= after):
                    continue
                eligible += first
                more |= not chosen.add(c)
            if first:
                report.recent, report.blocked, report.blocked_count = seen.recent, blocked.items, blocked.seen
                first = False
            for c in chosen.items:
                if not report.needed or free >= self.settings.target_free or self._task.stopping:
                    break  # (stopping: each study is done or not, so the next run simply goes on)
                after = _key(c)
                if report.dry_run:
                    report.recycled.append(c)
                    free += c.bytes
                    continue
                why = self._recycle(c, actor, trigger)
                if why:
                    c.eligible, c.reason = False, why
                    report.blocked.append(c)
                    report.blocked_count += 1
                    failed += 1
                    continue
                report.recycled.append(c)
                progress(f"recycled study {c.study_uid}: {_plural(c.instances, 'instance')}, "
                         f"{c.bytes / MiB:.1f} MiB")
                free = self.archive.disk_free_bytes()
            else:
                if more and report.needed and free < self.settings.target_free and not self._task.stopping:
                    continue  # every chosen study taken and still short: the next prefix
            break
        report.eligible_left = eligible - failed - len(report.recycled)
        return free

    def _result(self, report: RecycleReport, free: int) -> str:
        verb = "would free" if report.dry_run else "freed"
        if not report.needed:
            return (f"nothing to do: {free // MiB} MiB free, recycling starts below "
                    f"{self.settings.free_below // MiB} MiB")
        done = f"{_plural(len(report.recycled), 'study')} {verb} {report.bytes_freed / MiB:.1f} MiB"
        if free >= self.settings.target_free:
            return f"{done}; {free // MiB} MiB free, target met"
        blocked = f"; {_plural(report.blocked_count, 'study')} not yet offsite or still to forward" \
            if report.blocked_count else ""
        return (f"{done}; {free // MiB} MiB free, below the {self.settings.target_free // MiB} MiB target: "
                f"nothing more is eligible{blocked}")

    def _lock(self) -> int:
        fd = try_lock(self.lock_path)
        if fd is None:
            raise RecycleBusy("another recycling run is in progress on this box; try again when it ends")
        return fd

    # -- deleting one study ------------------------------------------------
    def _recycle(self, c: Candidate, actor: str, trigger: str) -> str:
        """Delete one study (index first, then files); return why not, or "" when done."""
        target = self.backup.target_key()
        outcome = self.index.writer.run(lambda: self._remove_rows(c, target, actor, trigger))
        if isinstance(outcome, str):
            log.info("recycling skipped study %s: %s", c.study_uid, outcome)
            return outcome
        self._purge(outcome)
        return ""

    def _remove_rows(self, c: Candidate, target: str, actor: str, trigger: str):
        """Inside the writer's transaction: check again, record, delete the rows, audit."""
        reason = (f"free space below {self.settings.free_below // MiB} MiB ({trigger}); "
                  f"last used {c.last_used:%Y-%m-%d}")
        out = self.index.recycling.take_out(c.pk, c.study_uid, target, reason)
        if out is None:
            return "gone from the index meanwhile"
        if isinstance(out, Kept):
            if out.not_offsite:
                return f"{out.not_offsite} of {_plural(out.objects, 'object')} not yet offsite"
            return f"{_plural(out.pending_forwards, 'instance')} still to be forwarded to a peer"
        # Written in this same transaction (not queued after it), so no deletion is ever left unaudited.
        self.audit._append(at=utcnow(), actor=actor, action="storage.recycle", address="",
                           patient_id=out.patient_id[:64], study_uid=out.study_uid[:64], detail=(
                               f"accession {out.accession or '-'}; {_plural(out.instances, 'instance')}"
                               f", {out.replaced} older version(s), {out.sealed_bytes} bytes freed; offsite on "
                               f"{target}; {reason}")[:2000])
        return out.recycled_study_id

    def _purge(self, recycled_study_id: int) -> int:
        """Delete the local files of one recycled study (idempotent), then stamp them purged."""
        ids = self.index.recycling.unpurged(recycled_study_id)
        self.archive.delete_many(ids)
        self.index.recycling.stamp_purged(recycled_study_id)
        return len(ids)

    def finish_interrupted(self) -> int:
        """Delete local files whose deletion (or restore) was interrupted; run before reconciliation.

        Skipped while another process (a CLI run) holds the recycling lock: that run finishes its own work.
        """
        try:
            fd = self._lock()
        except RecycleBusy:
            log.info("recycling: another process is recycling or restoring; its unfinished work is its own")
            return 0
        try:
            return self._finish_interrupted()
        finally:
            os.close(fd)

    def _finish_interrupted(self) -> int:
        self.staging.clear()  # downloads of a restore cut short: never indexed
        ids = self.index.recycling.unpurged()
        if not ids:
            return 0
        # Belt and braces: never delete a file that a live row names.
        live = self.index.recycling.live_among(ids)
        if live:
            log.error("recycling: %d object(s) are both live and recorded as recycled; left in place: %s",
                      len(live), ", ".join(sorted(live)[:10]))
        todo = [oid for oid in ids if oid not in live]
        self.archive.delete_many(todo)
        self.index.recycling.stamp_purged_ids(todo)
        log.info("recycling: finished %d interrupted deletion(s) of objects confirmed offsite", len(todo))
        return len(todo)

    # -- restore -----------------------------------------------------------
    def recycled(self, study_uid: str = "", limit: int | None = 100) -> list:
        """Recycled studies not yet restored, newest first."""
        return self.index.recycling.recycled(study_uid, limit)

    def restore(self, study_uid: str, actor: str = "system", parallel: int = 4,
                progress: Callable[[str], None] | None = None) -> RestoreResult:
        """Bring a recycled study back from the backup target, byte for byte, under its old object ids."""
        from ..ingest.dicomfile import parse

        progress = progress or (lambda _m: None)
        studies = self.recycled(study_uid, limit=None)
        if not studies:
            raise NotFound(f"study {study_uid} is not among the recycled studies (`pacs-appliance storage "
                           "recycled` lists them)")
        result = RestoreResult(study_uid)
        fd = self._lock()
        try:
            for rs in studies:
                objects = self.index.recycling.objects_of(rs.id)
                need = sum(o.offsite_size for o in objects)
                free = self.archive.disk_free_bytes()
                if free - need < self.settings.reserve:
                    raise DiskFull(f"restoring study {study_uid} needs {need / MiB:.1f} MiB, but only "
                                   f"{(free - self.settings.reserve) / MiB:.1f} MiB are free above the reserve")
                live = self.index.recycling.live_digests([o.sop_uid for o in objects])
                # The same bytes already live on the box (sent again since): nothing to fetch for those.
                fetch = [o for o in objects if not (not o.replaced and live.get(o.sop_uid) == o.sha256)]
                ids = [o.object_id for o in fetch]
                self.index.recycling.reopen(ids)  # intent: these files may now appear
                self._download(rs, fetch, parallel, progress)
                parsed = {}
                for o in fetch:
                    if not o.replaced:
                        data = self.staging.read(o.object_id)
                        parsed[o.object_id] = parse(io.BytesIO(data), len(data)).attributes
                        del data

                def reindex(rs=rs, objects=objects, fetch=fetch, parsed=parsed):
                    # Objects move into the archive inside this transaction: if it rolls back, the intent
                    # rows (purged_at NULL) make the next run or start-up remove them again.
                    counts = {"instances": 0, "replaced": 0, "skipped": len(objects) - len(fetch)}
                    for o in fetch:
                        self.archive.adopt(self.staging, o.object_id)
                        # "skipped": identical bytes arrived meanwhile, so this file is surplus (purged below)
                        kind = self.index.recycling.bring_back(o, parsed.get(o.object_id))
                        counts["instances" if kind == "instance" else kind] += 1
                    self.index.recycling.close_restore(rs.id)
                    self.audit._append(at=utcnow(), actor=actor, action="storage.restore", address="",
                                       patient_id=rs.patient_id[:64], study_uid=rs.study_uid[:64], detail=(
                                           f"accession {rs.accession or '-'}; {counts['instances']} instance(s) "
                                           f"and {counts['replaced']} older version(s) restored from "
                                           f"{rs.target}, {counts['skipped']} already on the box"))
                    return counts

                counts = self.index.writer.run(reindex)
                self.archive.sync_adopted(o.object_id for o in fetch)
                if self._purge(rs.id):  # surplus files (the same bytes arrived during the download)
                    self.index.recycling.forget_objects(rs.id)
                result.instances += counts["instances"]
                result.replaced += counts["replaced"]
                result.skipped += counts["skipped"]
                result.bytes += sum(o.offsite_size for o in fetch)
        finally:
            os.close(fd)
        log.info("restored recycled study %s: %d instance(s), %d older version(s)", study_uid, result.instances,
                 result.replaced)
        return result

    def _download(self, rs, objects: list, parallel: int, progress) -> None:
        """Fetch each object into the staging folder, every tag checked (backup/fetch.py)."""
        from ..backup.fetch import MISSING, fetch

        target = self.backup.open_target(rs.target)
        try:
            with contextlib.closing(fetch(target, self.archive, self.staging, [o.object_id for o in objects],
                                          parallel=parallel, adopt=False, thread_name="recycle-restore")) as got:
                for n, one in enumerate(got, 1):
                    if one.error == MISSING:
                        raise NotFound(f"object {one.object_id} of recycled study {rs.study_uid} is missing "
                                       f"from {target.url}")
                    if one.error:
                        raise IntegrityError(one.error)
                    if n % 50 == 0:
                        progress(f"fetched {n}/{len(objects)} objects")
        finally:
            target.close()

    # -- status ------------------------------------------------------------
    def totals(self) -> tuple[int, int]:
        """(studies recycled so far, bytes freed by them), restored ones included: counters for /metrics."""
        return self.index.recycling.totals()

    def status(self) -> dict:
        """For the dashboard and /metrics: cheap (no plan is computed here)."""
        free = self.archive.disk_free_bytes()
        studies, freed = self.totals()
        last = self.last.summary() if self.last else None
        warning = ""
        last_run = self.last
        if (self.settings.enabled and free < self.settings.free_below and last_run is not None
                and last_run.free_after < self.settings.target_free and not last_run.eligible_left):
            why = []
            if last_run.blocked_count:
                why.append(f"{_plural(last_run.blocked_count, 'study')} not yet offsite or still to forward "
                           "(is the backup running?)")
            if last_run.recent:
                why.append(f"{_plural(last_run.recent, 'study')} used in the last {self.settings.min_age.days} days")
            warning = "the disk is nearly full and nothing more can be recycled" + (
                ": " + "; ".join(why) if why else "")
        return {"enabled": self.settings.enabled, "free": free, "free_below": self.settings.free_below,
                "target_free": self.settings.target_free, "min_age_days": self.settings.min_age.days,
                "recycled_studies": studies, "recycled_bytes": freed,
                "offsite_only": self.index.recycling.offsite_only(),
                "last": last, "warning": warning}

    # -- the background service ----------------------------------------------
    def on_instance_stored(self, **_payload) -> None:
        """Wake the service as soon as arrivals push free space below the watermark (checked every few s)."""
        now = time.monotonic()
        if now - self._last_space_check < WAKE_CHECK_SECONDS or now < self._quiet_until:
            return
        self._last_space_check = now
        if self.archive.disk_free_bytes() < self.settings.free_below:
            self._low_space.set()
            self._task.wake()

    def start(self) -> None:
        if self.settings.enabled:
            self._task.start()

    def _round(self) -> None:
        trigger = "low space" if self._low_space.is_set() else "schedule"
        self._low_space.clear()
        try:
            self.run(trigger)
        except RecycleBusy:
            pass  # a manual run holds the lock: the next check comes soon enough

    def stop(self) -> None:
        self._task.stop()
