"""Storage recycling's reads and writes (appliance/services/recycle.py; tables in models/recycle.py).

Methods that say "inside a writer transaction" are called from a function the
recycler gives to the writer, so a study's rows go (or come back) together with
its audit entry and the archive files' moves, all or nothing.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterator

from . import records
from .models import Instance, Patient, ReplacedObject, Study, utcnow
from .models.recycle import RecycledObject, RecycledStudy
from .repository import NamedIds, Repository

BATCH = 500  # ids per IN (...) list
PAGE = 500  # studies per page of the recycler's pass (study_totals)
# BackupService.is_offsite, in SQL: the object is on the target and a manifest there lists it. Joined per
# study instead of asked per object (0.6 ms each: 600 ms of writer time for a 1,000-image study);
# tests/recycle/test_recycle.py holds the two to the same answer.
OFFSITE_JOIN = ("LEFT JOIN backup_object b ON b.target = ? AND b.object_id = {col} "
                "AND b.manifest_at IS NOT NULL")
NOT_OFFSITE = "sum(CASE WHEN b.id IS NULL THEN 1 ELSE 0 END)"  # counted over OFFSITE_JOIN (PostgreSQL has no sum(bool))


@dataclass(frozen=True)
class StudyTotals:
    pk: int
    study_uid: str
    accession: str
    study_date: str
    instances: int
    objects: int  # instances + replaced objects
    bytes: int  # sealed bytes as recorded offsite; plaintext size for objects not offsite
    not_offsite: int
    last_received: datetime.datetime | None
    pending_forwards: int


@dataclass(frozen=True)
class TakenOut:
    """A study moved from the index into the recycled tables (its files still to be deleted)."""

    recycled_study_id: int
    study_uid: str
    patient_id: str
    accession: str
    instances: int
    replaced: int
    sealed_bytes: int


@dataclass(frozen=True)
class Kept:
    """Why a study was not taken out after all (checked again inside the transaction)."""

    objects: int
    not_offsite: int = 0
    pending_forwards: int = 0


def _dt(value) -> datetime.datetime | None:
    if value is None or isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


class RecyclingRepo(Repository):
    # -- the plan ----------------------------------------------------------------
    def study_pages(self, target: str | None, page: int | None = None) -> Iterator[list[StudyTotals]]:
        """Every study that has instances, in primary-key order, with its objects (instances and replaced
        objects), their size, how many are not offsite on ``target``, the newest arrival and the instances
        still to be forwarded. Read in keyset pages of ``page`` studies (each page's totals asked for its
        ids alone), so a pass over 100,000 studies never holds more than one page."""
        page = page or PAGE
        after = 0
        while True:
            ids = [pk for (pk,) in self.db.execute_sql(
                "SELECT id FROM study WHERE id > ? ORDER BY id LIMIT ?", (after, page)).fetchall()]
            if not ids:
                return
            yield self._totals_of(ids, target)
            if len(ids) < page:
                return
            after = ids[-1]

    def _totals_of(self, ids: list[int], target: str | None) -> list[StudyTotals]:
        db = self.db
        marks = ",".join("?" * len(ids))
        studies = {}
        for pk, uid, acc, date, n, objects, size, missing, received in db.execute_sql(
                "SELECT s.id, s.study_uid, s.accession, s.study_date, s.num_instances, count(i.id), "
                "coalesce(sum(coalesce(b.size, i.size)), 0), " + NOT_OFFSITE + ", max(i.received_at) "
                "FROM study s JOIN series se ON se.study_id = s.id JOIN instance i ON i.series_id = se.id "
                + OFFSITE_JOIN.format(col="i.object_id") + f" WHERE s.id IN ({marks}) GROUP BY s.id",
                (target, *ids)).fetchall():
            studies[pk] = [pk, uid, acc, date, n, objects, size, missing or 0, _dt(received), 0]
        for pk, objects, size, missing in db.execute_sql(
                "SELECT se.study_id, count(r.id), coalesce(sum(coalesce(b.size, r.size)), 0), " + NOT_OFFSITE + " "
                "FROM replaced_object r JOIN instance i ON i.sop_uid = r.sop_uid "
                "JOIN series se ON se.id = i.series_id " + OFFSITE_JOIN.format(col="r.object_id")
                + f" WHERE se.study_id IN ({marks}) GROUP BY se.study_id", (target, *ids)).fetchall():
            if pk in studies:
                c = studies[pk]
                c[5], c[6], c[7] = c[5] + objects, c[6] + size, c[7] + missing
        for pk, n in db.execute_sql(
                "SELECT se.study_id, count(*) FROM forward_job f JOIN instance i ON i.object_id = f.object_id "
                f"JOIN series se ON se.id = i.series_id WHERE f.state = 'pending' AND se.study_id IN ({marks}) "
                "GROUP BY se.study_id", tuple(ids)).fetchall():
            if pk in studies:
                studies[pk][9] = n
        return [StudyTotals(*studies[pk]) for pk in ids if pk in studies]

    def last_access(self, study_uids: list[str], actions: tuple[str, ...]) -> dict[str, datetime.datetime]:
        """When the audit log last saw one of ``actions`` on each of ``study_uids`` (those it saw at all)."""
        found = {}
        for i in range(0, len(study_uids), BATCH):
            chunk = study_uids[i:i + BATCH]
            found.update((uid, _dt(at)) for uid, at in self.db.execute_sql(
                "SELECT study_uid, max(at) FROM audit_entry WHERE study_uid IN (" + ",".join("?" * len(chunk))
                + ") AND action IN (" + ",".join("?" * len(actions)) + ") GROUP BY study_uid",
                (*chunk, *actions)).fetchall())
        return found

    # -- taking one study out ----------------------------------------------------------
    def take_out(self, pk: int, study_uid: str, target: str, reason: str) -> TakenOut | Kept | None:
        """Check again that every object of the study is offsite and none waits to be forwarded; record the
        study and its objects as recycled (purged_at NULL: "these files are to be deleted"); delete its rows.
        Return ``Kept`` (why not) when a check fails, None when the study is gone. Runs inside a writer
        transaction."""
        db = self.db
        study = Study.select(Study, Patient).join(Patient).where(
            (Study.id == pk) & (Study.study_uid == study_uid)).first(db)
        if study is None:
            return None
        objects = db.execute_sql(
            "SELECT i.object_id, i.sop_uid, i.size, i.sha256, i.source, 0, b.size FROM instance i "
            "JOIN series se ON se.id = i.series_id "
            + OFFSITE_JOIN.format(col="i.object_id") + " WHERE se.study_id = ? UNION ALL "
            "SELECT r.object_id, r.sop_uid, r.size, r.sha256, r.source, 1, b.size FROM replaced_object r "
            "JOIN instance i ON i.sop_uid = r.sop_uid JOIN series se ON se.id = i.series_id "
            + OFFSITE_JOIN.format(col="r.object_id") + " WHERE se.study_id = ?", (target, pk, target, pk)
        ).fetchall()
        not_offsite = [o for o in objects if o[6] is None]  # checked again here, inside the transaction
        if not_offsite:
            return Kept(objects=len(objects), not_offsite=len(not_offsite))
        forwards = db.execute_sql(
            "SELECT count(*) FROM forward_job WHERE state = 'pending' AND object_id IN "
            "(SELECT i.object_id FROM instance i JOIN series se ON se.id = i.series_id WHERE se.study_id = ?)",
            (pk,)).fetchone()[0]
        if forwards:
            return Kept(objects=len(objects), pending_forwards=forwards)
        patient = study.patient  # joined above: no lazy load
        sealed = sum(o[6] for o in objects)
        instances = sum(1 for o in objects if not o[5])
        rs_id = RecycledStudy.insert(
            study_uid=study.study_uid, patient_id=patient.patient_id, patient_name=patient.name,
            study_date=study.study_date, accession=study.accession, description=study.description,
            modalities=study.modalities, num_instances=instances, bytes=sealed, target=target,
            reason=reason[:255], recycled_at=utcnow()).execute(db)
        for i in range(0, len(objects), 200):
            RecycledObject.insert_many([
                {"study": rs_id, "object_id": oid, "sop_uid": sop, "size": size, "sha256": sha, "source": src,
                 "replaced": bool(rep), "offsite_size": osize}
                for oid, sop, size, sha, src, rep, osize in objects[i:i + 200]]).execute(db)
        replaced = [o[0] for o in objects if o[5]]
        for i in range(0, len(replaced), BATCH):
            ReplacedObject.delete().where(ReplacedObject.object_id.in_(replaced[i:i + BATCH])).execute(db)
        # The whole study goes, so the patient's counts drop by the study's own (records.remove_instance
        # does the same per instance); series and instance rows go with the study (ON DELETE CASCADE).
        Patient.update(num_studies=Patient.num_studies - 1, num_series=Patient.num_series - study.num_series,
                       num_instances=Patient.num_instances - study.num_instances).where(
            Patient.id == patient.id).execute(db)
        Study.delete().where(Study.id == study.id).execute(db)
        Patient.delete().where((Patient.id == patient.id) & (Patient.num_instances <= 0)).execute(db)
        return TakenOut(rs_id, study.study_uid, patient.patient_id, study.accession, instances, len(replaced),
                        sealed)

    # -- the files of recycled objects ------------------------------------------------
    def unpurged(self, recycled_study_id: int | None = None) -> list[str]:
        """Object ids whose local file may still exist (of one recycled study, or of all)."""
        q = RecycledObject.select(RecycledObject.object_id).where(RecycledObject.purged_at.is_null())
        if recycled_study_id is not None:
            q = q.where(RecycledObject.study == recycled_study_id)
        return [oid for (oid,) in q.tuples().execute(self.db)]

    def stamp_purged(self, recycled_study_id: int) -> None:
        self.writer.run(lambda: RecycledObject.update(purged_at=utcnow()).where(
            (RecycledObject.study == recycled_study_id) & RecycledObject.purged_at.is_null()).execute(self.db))

    def stamp_purged_ids(self, object_ids: list[str]) -> None:
        def stamp():
            for i in range(0, len(object_ids), BATCH):
                RecycledObject.update(purged_at=utcnow()).where(
                    RecycledObject.object_id.in_(object_ids[i:i + BATCH])).execute(self.db)

        self.writer.run(stamp)

    def live_among(self, object_ids: list[str]) -> set[str]:
        """Those of ``object_ids`` that an instance or replaced-object row names."""
        live = set()
        for i in range(0, len(object_ids), BATCH):
            chunk = object_ids[i:i + BATCH]
            live.update(oid for (oid,) in Instance.select(Instance.object_id).where(
                Instance.object_id.in_(chunk)).tuples().execute(self.db))
            live.update(oid for (oid,) in ReplacedObject.select(ReplacedObject.object_id).where(
                ReplacedObject.object_id.in_(chunk)).tuples().execute(self.db))
        return live

    def is_recycled(self, object_id: str) -> bool:
        return RecycledObject.select().where(RecycledObject.object_id == object_id).exists(self.db)

    def object_ids(self) -> NamedIds:
        """The objects of recycled studies (offsite only), looked up one at a time (``in``), never loaded."""
        return NamedIds(self.db, "recycled_object")

    # -- bringing a study back ----------------------------------------------------------
    def recycled(self, study_uid: str = "", limit: int | None = 100) -> list[RecycledStudy]:
        """Recycled studies not yet restored, newest first (plain records)."""
        q = RecycledStudy.select().where(RecycledStudy.restored_at.is_null())
        if study_uid:
            q = q.where(RecycledStudy.study_uid == study_uid)
        q = q.order_by(RecycledStudy.recycled_at.desc())
        return list((q.limit(limit) if limit else q).execute(self.db))

    def objects_of(self, recycled_study_id: int) -> list[RecycledObject]:
        return list(RecycledObject.select().where(RecycledObject.study == recycled_study_id)
                    .order_by(RecycledObject.id).execute(self.db))

    def live_digests(self, sop_uids: list[str]) -> dict[str, str]:
        """SOP Instance UID -> SHA-256 of the live instance, for those of ``sop_uids`` on the box."""
        found = {}
        for i in range(0, len(sop_uids), BATCH):
            found.update(Instance.select(Instance.sop_uid, Instance.sha256).where(
                Instance.sop_uid.in_(sop_uids[i:i + BATCH])).tuples().execute(self.db))
        return found

    def reopen(self, object_ids: list[str]) -> None:
        """Intent: these files may now appear on the disk (a restore starts): purged_at back to NULL."""
        def write():
            for i in range(0, len(object_ids), BATCH):
                RecycledObject.update(purged_at=None).where(
                    RecycledObject.object_id.in_(object_ids[i:i + BATCH])).execute(self.db)

        self.writer.run(write)

    def bring_back(self, o: RecycledObject, attributes) -> str:
        """Index one restored object again: "instance", "replaced" (kept as an older version) or "skipped"
        (the same instance arrived meanwhile: the file is surplus, its row stays for the purge). Runs inside
        a writer transaction, after the object was adopted into the archive."""
        db = self.db
        current = Instance.select(Instance.sha256).where(Instance.sop_uid == o.sop_uid).first(db)
        if o.replaced or (current is not None and current.sha256 != o.sha256):
            ReplacedObject.insert(sop_uid=o.sop_uid, object_id=o.object_id, size=o.size, sha256=o.sha256,
                                  source=o.source, replaced_at=utcnow()).execute(db)
            kind = "replaced"
        elif current is not None:
            return "skipped"
        else:
            records.record(db, attributes, o.object_id, o.size, o.sha256, o.source)
            kind = "instance"
        RecycledObject.delete().where(RecycledObject.object_id == o.object_id).execute(db)
        return kind

    def close_restore(self, recycled_study_id: int) -> None:
        """The study is back: drop its purged rows, stamp it restored. Runs inside a writer transaction."""
        RecycledObject.delete().where((RecycledObject.study == recycled_study_id)
                                      & RecycledObject.purged_at.is_null(False)).execute(self.db)
        RecycledStudy.update(restored_at=utcnow()).where(RecycledStudy.id == recycled_study_id).execute(self.db)

    def forget_objects(self, recycled_study_id: int) -> None:
        self.writer.run(lambda: RecycledObject.delete().where(
            RecycledObject.study == recycled_study_id).execute(self.db))

    # -- status -------------------------------------------------------------------------
    def totals(self) -> tuple[int, int]:
        """(studies recycled so far, bytes freed by them), restored ones included."""
        n, size = self.db.execute_sql("SELECT count(id), coalesce(sum(bytes), 0) FROM recycled_study").fetchone()
        return n or 0, size or 0

    def offsite_only(self) -> int:
        """Recycled studies not restored: their only copy is offsite."""
        return RecycledStudy.select().where(RecycledStudy.restored_at.is_null()).count(self.db)
