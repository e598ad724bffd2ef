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
  ``BackupService.is_offsite``; DESIGN invariant 6). One object not yet
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
(backup/snapshot.py), so the retention period never deletes them offsite:
recycled objects stay on the target until the study is restored. A disaster
restore does not download them (backup/restore.py) but keeps these rows, so
``storage restore`` works on the new box too.

Restore (``pacs-appliance storage restore STUDY_UID``) downloads each object
from the target (recorded per study) into ``archive/restoring/``, checks every
tag, parses it, and then, in one transaction, moves it into ``objects/`` under
its own object id, indexes it again and removes the ``recycled_*`` rows: the
study is back byte for byte, and because its object ids did not change the
backup sends nothing again. The restored study counts as just received, so it is
not recycled again for ``recycle_min_age_days``.

Logs name study UIDs and counts only; patient IDs go to the audit log alone.
"""
from __future__ import annotations

import datetime
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .archive import envelope
from .archive.fsutil import fsync_dir, private_dir, try_lock
from .errors import ApplianceError, ConfigError, DiskFull, NotFound
from .index.models import Instance, Patient, ReplacedObject, Study, utcnow
from .index.models.recycle import RecycledObject, RecycledStudy

log = logging.getLogger(__name__)
MiB = 1 << 20
# Audit actions that mean "somebody opened this study" (see web/viewer, dicom/move.py, get.py, dicomweb).
ACCESS_ACTIONS = ("study.view", "study.export", "dicom.move", "dicom.get", "dicomweb.retrieve")
# BackupService.is_offsite, in SQL: the object is on the target and a manifest there lists it. Joined per
# study instead of asked per object (0.6 ms each: 600 ms of writer time for a 1,000-image study);
# tests/recycle/test_recycle.py holds the two to the same answer.
OFFSITE_JOIN = ("LEFT JOIN backup_object b ON b.target = ? AND b.object_id = {col} "
                "AND b.manifest_at IS NOT NULL")
WAKE_CHECK_SECONDS = 5.0  # free space is looked at on arrivals at most this often
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
    blocked: list[Candidate] = field(default_factory=list)  # old enough, but not safely offsite
    recent: int = 0  # studies used within recycle_min_age_days
    eligible_left: int = 0
    result: str = ""

    @property
    def bytes_freed(self) -> int:
        return sum(c.bytes for c in self.recycled)

    def summary(self) -> dict:
        return {"at": self.finished_at or self.started_at, "trigger": self.trigger, "dry_run": self.dry_run,
                "studies": len(self.recycled), "bytes": self.bytes_freed, "blocked": len(self.blocked),
                "free_before": self.free_before, "free_after": self.free_after, "result": self.result}


@dataclass
class RestoreResult:
    study_uid: str
    instances: int = 0
    replaced: int = 0
    skipped: int = 0  # the same instance is live on the box already
    bytes: int = 0


def _dt(value) -> datetime.datetime | None:
    if value is None or isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


class Recycler:
    def __init__(self, settings: RecycleSettings, archive, index, backup, audit, lock_path: Path):
        self.settings = settings
        self.archive, self.index, self.backup, self.audit = archive, index, backup, audit
        self.lock_path = Path(lock_path)
        self.last: RecycleReport | None = None  # the last real (not dry) run, for the dashboard and /metrics
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_space_check = 0.0
        self._quiet_until = 0.0  # after a run that could not meet the target, arrivals do not wake it before this

    # -- the plan ----------------------------------------------------------
    def plan(self, now: datetime.datetime | None = None) -> tuple[list[Candidate], int]:
        """(studies old enough, least recently used first, each marked eligible or not with a reason;
        the number of studies kept because they were used recently)."""
        now = now or utcnow()
        db = self.index.db
        target = self.backup.target_key() if self.backup is not None and self.backup.configured else None
        studies = {}
        rows = db.execute_sql(
            "SELECT s.id, s.study_uid, s.accession, s.study_date, s.num_instances, count(i.id), "
            "coalesce(sum(coalesce(b.size, i.size)), 0), sum(b.id IS NULL), max(i.received_at) "
            "FROM study s JOIN series se ON se.study_id = s.id JOIN instance i ON i.series_id = se.id "
            + OFFSITE_JOIN.format(col="i.object_id") + " GROUP BY s.id", (target,)).fetchall()
        for pk, uid, acc, date, n, objects, size, missing, received in rows:
            studies[pk] = Candidate(pk, uid, acc, date, n, objects, size, _dt(received), None, missing or 0)
        for pk, objects, size, missing in db.execute_sql(
                "SELECT se.study_id, count(r.id), coalesce(sum(coalesce(b.size, r.size)), 0), sum(b.id IS NULL) "
                "FROM replaced_object r JOIN instance i ON i.sop_uid = r.sop_uid "
                "JOIN series se ON se.id = i.series_id " + OFFSITE_JOIN.format(col="r.object_id")
                + " GROUP BY se.study_id", (target,)).fetchall():
            if pk in studies:
                c = studies[pk]
                c.objects, c.bytes, c.not_offsite = c.objects + objects, c.bytes + size, c.not_offsite + missing
        for pk, n in db.execute_sql(
                "SELECT se.study_id, count(*) FROM forward_job f JOIN instance i ON i.object_id = f.object_id "
                "JOIN series se ON se.id = i.series_id WHERE f.state = 'pending' GROUP BY se.study_id").fetchall():
            if pk in studies:
                studies[pk].pending_forwards = n
        cutoff = now - self.settings.min_age
        access_sql = ("SELECT max(at) FROM audit_entry WHERE study_uid = ? AND action IN ("
                      + ",".join("?" * len(ACCESS_ACTIONS)) + ")")
        old, recent = [], 0
        for c in studies.values():
            if c.last_received is not None and c.last_received >= cutoff:
                recent += 1
                continue
            c.last_accessed = _dt(db.execute_sql(access_sql, (c.study_uid, *ACCESS_ACTIONS)).fetchone()[0])
            if c.last_used >= cutoff:
                recent += 1
                continue
            if target is None:
                c.reason = "no backup target is configured"
            elif c.not_offsite:
                c.reason = f"{c.not_offsite} of {_plural(c.objects, 'object')} not yet offsite"
            elif c.pending_forwards:
                c.reason = f"{_plural(c.pending_forwards, 'instance')} still to be forwarded to a peer"
            else:
                c.eligible, c.reason = True, f"offsite; last used {c.last_used:%Y-%m-%d}"
            old.append(c)
        old.sort(key=lambda c: (c.last_used, c.pk))
        return old, recent

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
            candidates, report.recent = self.plan()
            report.blocked = [c for c in candidates if not c.eligible]
            eligible = [c for c in candidates if c.eligible]
            for c in eligible:
                if not report.needed or free >= self.settings.target_free or self._stop.is_set():
                    break  # (stopping: each study is done or not, so the next run simply goes on)
                if dry_run:
                    report.recycled.append(c)
                    free += c.bytes
                    continue
                why = self._recycle(c, actor, trigger)
                if why:
                    c.eligible, c.reason = False, why
                    report.blocked.append(c)
                    continue
                report.recycled.append(c)
                progress(f"recycled study {c.study_uid}: {_plural(c.instances, 'instance')}, "
                         f"{c.bytes / MiB:.1f} MiB")
                free = self.archive.disk_free_bytes()
            report.free_after = free
            report.eligible_left = sum(1 for c in eligible if c.eligible) - len(report.recycled)
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
        return report

    def _result(self, report: RecycleReport, free: int) -> str:
        verb = "would free" if report.dry_run else "freed"
        if not report.needed:
            return (f"nothing to do: {free // MiB} MiB free, recycling starts below "
                    f"{self.settings.free_below // MiB} MiB")
        done = f"{_plural(len(report.recycled), 'study')} {verb} {report.bytes_freed / MiB:.1f} MiB"
        if free >= self.settings.target_free:
            return f"{done}; {free // MiB} MiB free, target met"
        blocked = f"; {_plural(len(report.blocked), 'study')} not yet offsite or still to forward" \
            if report.blocked else ""
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
        db = self.index.db
        study = Study.select(Study, Patient).join(Patient).where(
            (Study.id == c.pk) & (Study.study_uid == c.study_uid)).first()
        if study is None:
            return "gone from the index meanwhile"
        objects = db.execute_sql(
            "SELECT i.object_id, i.sop_uid, i.size, i.sha256, i.source, 0, b.size FROM instance i "
            "JOIN series se ON se.id = i.series_id "
            + OFFSITE_JOIN.format(col="i.object_id") + " WHERE se.study_id = ? UNION ALL "
            "SELECT r.object_id, r.sop_uid, r.size, r.sha256, r.source, 1, b.size FROM replaced_object r "
            "JOIN instance i ON i.sop_uid = r.sop_uid JOIN series se ON se.id = i.series_id "
            + OFFSITE_JOIN.format(col="r.object_id") + " WHERE se.study_id = ?", (target, c.pk, target, c.pk)
        ).fetchall()
        not_offsite = [o for o in objects if o[6] is None]  # checked again here, inside the transaction
        if not_offsite:
            return f"{len(not_offsite)} of {_plural(len(objects), 'object')} not yet offsite"
        forwards = db.execute_sql(
            "SELECT count(*) FROM forward_job WHERE state = 'pending' AND object_id IN "
            "(SELECT i.object_id FROM instance i JOIN series se ON se.id = i.series_id WHERE se.study_id = ?)",
            (c.pk,)).fetchone()[0]
        if forwards:
            return f"{_plural(forwards, 'instance')} still to be forwarded to a peer"
        patient = study.patient
        sealed = sum(o[6] for o in objects)
        instances = sum(1 for o in objects if not o[5])
        reason = (f"free space below {self.settings.free_below // MiB} MiB ({trigger}); "
                  f"last used {c.last_used:%Y-%m-%d}")
        rs = RecycledStudy.create(
            study_uid=study.study_uid, patient_id=patient.patient_id, patient_name=patient.name,
            study_date=study.study_date, accession=study.accession, description=study.description,
            modalities=study.modalities, num_instances=instances, bytes=sealed, target=target, reason=reason[:255])
        for i in range(0, len(objects), 200):
            RecycledObject.insert_many([
                {"study": rs.id, "object_id": oid, "sop_uid": sop, "size": size, "sha256": sha, "source": src,
                 "replaced": bool(rep), "offsite_size": osize}
                for oid, sop, size, sha, src, rep, osize in objects[i:i + 200]]).execute()
        replaced = [o[0] for o in objects if o[5]]
        for i in range(0, len(replaced), 500):
            ReplacedObject.delete().where(ReplacedObject.object_id.in_(replaced[i:i + 500])).execute()
        # The whole study goes, so the patient's counts drop by the study's own (records.remove_instance
        # does the same per instance); series and instance rows go with the study (ON DELETE CASCADE).
        Patient.update(num_studies=Patient.num_studies - 1, num_series=Patient.num_series - study.num_series,
                       num_instances=Patient.num_instances - study.num_instances).where(
            Patient.id == patient.id).execute()
        study.delete_instance()
        Patient.delete().where((Patient.id == patient.id) & (Patient.num_instances <= 0)).execute()
        # Written in this same transaction (not queued after it), so no deletion is ever left unaudited.
        self.audit._append(at=utcnow(), actor=actor, action="storage.recycle", address="",
                           patient_id=patient.patient_id[:64], study_uid=study.study_uid[:64], detail=(
                               f"accession {study.accession or '-'}; {_plural(instances, 'instance')}"
                               f", {len(replaced)} older version(s), {sealed} bytes freed; offsite on {target}; "
                               f"{reason}")[:2000])
        return rs.id

    def _purge(self, recycled_study_id: int) -> int:
        """Delete the local files of one recycled study (idempotent), then stamp them purged."""
        ids = [oid for (oid,) in RecycledObject.select(RecycledObject.object_id).where(
            (RecycledObject.study == recycled_study_id) & RecycledObject.purged_at.is_null()).tuples()]
        self._delete_files(ids)
        self.index.writer.run(lambda: RecycledObject.update(purged_at=utcnow()).where(
            (RecycledObject.study == recycled_study_id) & RecycledObject.purged_at.is_null()).execute())
        return len(ids)

    def _delete_files(self, ids: list[str]) -> None:
        dirs = set()
        for oid in ids:
            path = self.archive.path(oid)
            try:
                path.unlink()
                dirs.add(path.parent)
            except FileNotFoundError:
                pass
        for d in dirs:  # one fsync per directory, not per object
            fsync_dir(d)

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
        if self.staging_dir.exists():  # downloads of a restore cut short: never indexed
            for entry in self.staging_dir.iterdir():
                entry.unlink(missing_ok=True)
        pending = list(RecycledObject.select(RecycledObject.object_id, RecycledObject.study)
                       .where(RecycledObject.purged_at.is_null()).tuples())
        if not pending:
            return 0
        ids = [oid for oid, _ in pending]
        # Belt and braces: never delete a file that a live row names.
        live = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            live.update(oid for (oid,) in Instance.select(Instance.object_id).where(
                Instance.object_id.in_(chunk)).tuples())
            live.update(oid for (oid,) in ReplacedObject.select(ReplacedObject.object_id).where(
                ReplacedObject.object_id.in_(chunk)).tuples())
        if live:
            log.error("recycling: %d object(s) are both live and recorded as recycled; left in place: %s",
                      len(live), ", ".join(sorted(live)[:10]))
        todo = [oid for oid in ids if oid not in live]
        self._delete_files(todo)

        def stamp():
            for i in range(0, len(todo), 500):
                RecycledObject.update(purged_at=utcnow()).where(
                    RecycledObject.object_id.in_(todo[i:i + 500])).execute()

        self.index.writer.run(stamp)
        log.info("recycling: finished %d interrupted deletion(s) of objects confirmed offsite", len(todo))
        return len(todo)

    # -- restore -----------------------------------------------------------
    def recycled(self, study_uid: str = "", limit: int | None = 100) -> list[RecycledStudy]:
        q = RecycledStudy.select().where(RecycledStudy.restored_at.is_null())
        if study_uid:
            q = q.where(RecycledStudy.study_uid == study_uid)
        q = q.order_by(RecycledStudy.recycled_at.desc())
        return list(q.limit(limit) if limit else q)

    def restore(self, study_uid: str, actor: str = "system", parallel: int = 4,
                progress: Callable[[str], None] | None = None) -> RestoreResult:
        """Bring a recycled study back from the backup target, byte for byte, under its old object ids."""
        from .dicomfile import parse
        from .index.records import record_instance

        progress = progress or (lambda _m: None)
        studies = self.recycled(study_uid, limit=None)
        if not studies:
            raise NotFound(f"study {study_uid} is not among the recycled studies (`pacs-appliance storage "
                           "recycled` lists them)")
        result = RestoreResult(study_uid)
        fd = self._lock()
        try:
            for rs in studies:
                objects = list(rs.objects)
                need = sum(o.offsite_size for o in objects)
                free = self.archive.disk_free_bytes()
                if free - need < self.settings.reserve:
                    raise DiskFull(f"restoring study {study_uid} needs {need / MiB:.1f} MiB, but only "
                                   f"{(free - self.settings.reserve) / MiB:.1f} MiB are free above the reserve")
                live = {sop: sha for sop, sha in Instance.select(Instance.sop_uid, Instance.sha256).where(
                    Instance.sop_uid.in_([o.sop_uid for o in objects])).tuples()}
                # The same bytes already live on the box (sent again since): nothing to fetch for those.
                fetch = [o for o in objects if not (not o.replaced and live.get(o.sop_uid) == o.sha256)]
                ids = [o.object_id for o in fetch]
                self.index.writer.run(lambda: RecycledObject.update(purged_at=None).where(
                    RecycledObject.object_id.in_(ids)).execute())  # intent: these files may now appear
                staged = self._download(rs.target, fetch, parallel, progress)
                parsed = {}
                for o in fetch:
                    if not o.replaced:
                        data = self._read_staged(o.object_id, staged[o.object_id])
                        parsed[o.object_id] = parse(io.BytesIO(data), len(data)).attributes
                        del data

                def reindex(rs=rs, objects=objects, fetch=fetch, parsed=parsed, staged=staged):
                    # Objects move into the archive inside this transaction: if it rolls back, the intent
                    # rows (purged_at NULL) make the next run or start-up remove them again.
                    counts = {"instances": 0, "replaced": 0, "skipped": len(objects) - len(fetch)}
                    for o in fetch:
                        self._move_in(o.object_id, staged[o.object_id])
                        current = Instance.get_or_none(Instance.sop_uid == o.sop_uid)
                        if o.replaced or (current is not None and current.sha256 != o.sha256):
                            ReplacedObject.create(sop_uid=o.sop_uid, object_id=o.object_id, size=o.size,
                                                  sha256=o.sha256, source=o.source)
                            counts["replaced"] += 1
                        elif current is not None:  # identical bytes arrived meanwhile: this file is surplus
                            counts["skipped"] += 1
                            continue
                        else:
                            record_instance(parsed[o.object_id], o.object_id, o.size, o.sha256, o.source)
                            counts["instances"] += 1
                        RecycledObject.delete().where(RecycledObject.object_id == o.object_id).execute()
                    RecycledObject.delete().where((RecycledObject.study == rs.id) & RecycledObject.purged_at.is_null(
                        False)).execute()
                    RecycledStudy.update(restored_at=utcnow()).where(RecycledStudy.id == rs.id).execute()
                    self.audit._append(at=utcnow(), actor=actor, action="storage.restore", address="",
                                       patient_id=rs.patient_id[:64], study_uid=rs.study_uid[:64], detail=(
                                           f"accession {rs.accession or '-'}; {counts['instances']} instance(s) "
                                           f"and {counts['replaced']} older version(s) restored from "
                                           f"{rs.target}, {counts['skipped']} already on the box"))
                    return counts

                counts = self.index.writer.run(reindex)
                for d in {self.archive.path(o.object_id).parent for o in fetch}:
                    fsync_dir(d)
                if self._purge(rs.id):  # surplus files (the same bytes arrived during the download)
                    self.index.writer.run(lambda rs=rs: RecycledObject.delete().where(
                        RecycledObject.study == rs.id).execute())
                result.instances += counts["instances"]
                result.replaced += counts["replaced"]
                result.skipped += counts["skipped"]
                result.bytes += sum(o.offsite_size for o in fetch)
        finally:
            os.close(fd)
        log.info("restored recycled study %s: %d instance(s), %d older version(s)", study_uid, result.instances,
                 result.replaced)
        return result

    @property
    def staging_dir(self) -> Path:
        """Where restored objects wait, checked, until the transaction that indexes them moves them in.

        Not ``archive/tmp`` (start-up removes what is there) and not ``objects/`` (reconciliation would
        call a not-yet-indexed object an orphan if a server started meanwhile).
        """
        return self.archive.root / "restoring"

    def _download(self, target_url: str, objects: list, parallel: int, progress) -> dict[str, Path]:
        """Fetch each object into the staging folder, every tag checked; object id -> staged path."""
        from concurrent.futures import ThreadPoolExecutor

        from .backup import manifest as mf

        self.staging_dir.mkdir(mode=0o700, exist_ok=True)
        target = self.backup.open_target(target_url)
        keyring = self.archive.keyring

        def one(o) -> tuple[str, Path]:
            staged = self.staging_dir / o.object_id
            with open(staged, "wb") as dst:
                try:
                    with target.open(mf.object_name(o.object_id)) as src:
                        while block := src.read(1 << 20):
                            dst.write(block)
                except FileNotFoundError:
                    raise NotFound(f"object {o.object_id} of recycled study {o.study.study_uid} is missing "
                                   f"from {target.url}") from None
                dst.flush()
                os.fsync(dst.fileno())
                size = os.fstat(dst.fileno()).st_size
            with open(staged, "rb") as check:  # every tag, before the object is used
                for _chunk in envelope.open_chunks(check, size, bytes.fromhex(o.object_id), keyring.archive_key,
                                                   f"offsite object {o.object_id}"):
                    pass
            return o.object_id, staged

        staged: dict[str, Path] = {}
        try:
            with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="recycle-restore") as pool:
                for oid, path in pool.map(one, objects):
                    staged[oid] = path
                    if len(staged) % 50 == 0:
                        progress(f"fetched {len(staged)}/{len(objects)} objects")
        finally:
            target.close()
        return staged

    def _read_staged(self, object_id: str, path: Path) -> bytes:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            return b"".join(envelope.open_chunks(fh, size, bytes.fromhex(object_id), self.archive.keyring.archive_key,
                                                 f"object {object_id}"))

    def _move_in(self, object_id: str, staged: Path) -> None:
        final = self.archive.path(object_id)
        private_dir(final.parent)
        os.rename(staged, final)

    # -- status ------------------------------------------------------------
    def totals(self) -> tuple[int, int]:
        """(studies recycled so far, bytes freed by them), restored ones included: counters for /metrics."""
        from peewee import fn

        n, size = RecycledStudy.select(fn.COUNT(RecycledStudy.id), fn.COALESCE(fn.SUM(RecycledStudy.bytes), 0)
                                       ).scalar(as_tuple=True)
        return n or 0, size or 0

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
            if last_run.blocked:
                why.append(f"{_plural(len(last_run.blocked), 'study')} not yet offsite or still to forward "
                           "(is the backup running?)")
            if last_run.recent:
                why.append(f"{_plural(last_run.recent, 'study')} used in the last {self.settings.min_age.days} days")
            warning = "the disk is nearly full and nothing more can be recycled" + (
                ": " + "; ".join(why) if why else "")
        return {"enabled": self.settings.enabled, "free": free, "free_below": self.settings.free_below,
                "target_free": self.settings.target_free, "min_age_days": self.settings.min_age.days,
                "recycled_studies": studies, "recycled_bytes": freed,
                "offsite_only": RecycledStudy.select().where(RecycledStudy.restored_at.is_null()).count(),
                "last": last, "warning": warning}

    # -- the background service ----------------------------------------------
    def on_instance_stored(self, **_payload) -> None:
        """Wake the service as soon as arrivals push free space below the watermark (checked every few s)."""
        now = time.monotonic()
        if now - self._last_space_check < WAKE_CHECK_SECONDS or now < self._quiet_until:
            return
        self._last_space_check = now
        if self.archive.disk_free_bytes() < self.settings.free_below:
            self._wake.set()

    def start(self) -> None:
        if not self.settings.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="recycler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run("schedule" if not self._wake.is_set() else "low space")
            except RecycleBusy:
                pass
            except Exception:  # noqa: BLE001 - try again at the next check
                log.exception("recycling failed")
            self._wake.clear()
            self._wake.wait(self.settings.check_seconds)
            if self._stop.is_set():
                return

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
