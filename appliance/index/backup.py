"""The backup's state in the index: what is offsite (``backup_object``) and the run history (``backup_run``).

Used by appliance/backup (sync, service, schedule, restore) through ``index.backup``;
the tables are described in models/backup.py.
"""
from __future__ import annotations

import datetime
from typing import Iterator, NamedTuple

from ..errors import DataDirError
from .models import utcnow
from .models.backup import BackupObject, BackupRun
from .repository import NamedIds, Repository

BATCH = 500  # ids per IN (...) list
PAGE = 5000  # rows per keyset page of ``uploaded``


class Uploaded(NamedTuple):
    object_id: str
    size: int  # sealed bytes, as stored offsite
    deleted: bool  # gone from the box: retention runs
    unlisted: bool  # uploaded by a run that did not finish: in no manifest yet


class BackupRepo(Repository):
    # -- what is offsite, per target -----------------------------------------------
    def uploaded(self, target: str) -> Iterator[Uploaded]:
        """The objects recorded as uploaded to ``target``, in object-id order: keyset pages over the (target,
        object_id) index, read as they are consumed (a box has a million rows and more, never held at once)."""
        after = ""
        while True:
            rows = self.db.execute_sql(
                "SELECT object_id, size, deleted_at IS NOT NULL, manifest_at IS NULL FROM backup_object "
                "WHERE target = ? AND object_id > ? ORDER BY object_id LIMIT ?", (target, after, PAGE)).fetchall()
            for oid, size, deleted, unlisted in rows:
                yield Uploaded(oid, size, bool(deleted), bool(unlisted))
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def count(self, target: str) -> int:
        return BackupObject.select().where(BackupObject.target == target).count(self.db)

    def is_offsite(self, target: str, object_id: str) -> bool:
        return BackupObject.select().where(
            (BackupObject.target == target) & (BackupObject.object_id == object_id)
            & BackupObject.manifest_at.is_null(False)).exists(self.db)

    def record_uploaded(self, target: str, uploaded: list[tuple[str, int]]) -> None:
        rows = [{"target": target, "object_id": oid, "size": size, "uploaded_at": utcnow()}
                for oid, size in uploaded]

        def write():
            for i in range(0, len(rows), BATCH):
                BackupObject.insert_many(rows[i:i + BATCH]).on_conflict_ignore().execute(self.db)

        self.writer.run(write)

    def stamp_listed(self, target: str, when: datetime.datetime) -> None:
        """A manifest on ``target`` now lists every object uploaded so far: they are offsite."""
        self.writer.run(lambda: BackupObject.update(manifest_at=when).where(
            (BackupObject.target == target) & BackupObject.manifest_at.is_null()).execute(self.db))

    def mark_gone(self, target: str, gone: list[str], back: list[str], when: datetime.datetime) -> None:
        """Objects that left the box (retention starts) and objects that came back (it stops)."""
        def mark():
            for i in range(0, len(gone), BATCH):
                BackupObject.update(deleted_at=when).where(
                    (BackupObject.target == target) & BackupObject.object_id.in_(gone[i:i + BATCH])).execute(self.db)
            for i in range(0, len(back), BATCH):
                BackupObject.update(deleted_at=None).where(
                    (BackupObject.target == target) & BackupObject.object_id.in_(back[i:i + BATCH])).execute(self.db)

        self.writer.run(mark)

    def expired(self, target: str, before: datetime.datetime) -> list[str]:
        """Objects gone from the box before ``before``: their offsite copies may go."""
        return [oid for (oid,) in self.db.execute_sql(
            "SELECT object_id FROM backup_object WHERE target = ? AND deleted_at < ?", (target, before)).fetchall()]

    def forget(self, target: str, object_id: str | None = None) -> None:
        """Forget one object (deleted offsite), or all that this box believes is on ``target``."""
        where = BackupObject.target == target
        if object_id is not None:
            where &= BackupObject.object_id == object_id
        self.writer.run(lambda: BackupObject.delete().where(where).execute(self.db))

    def forget_all(self) -> None:
        """A restored box: what the old box had offsite is not this box's state."""
        self.writer.run(lambda: BackupObject.delete().execute(self.db))

    # -- the run history -----------------------------------------------------------
    def start_run(self, target: str, trigger: str) -> int:
        return self.writer.run(lambda: BackupRun.insert(target=target, trigger=trigger, started_at=utcnow())
                               .execute(self.db))

    def finish_run(self, run_id: int, *, result: str, objects: int, bytes: int, manifest: str, error: str) -> None:
        self.writer.run(lambda: BackupRun.update(
            finished_at=utcnow(), result=result, objects=objects, bytes=bytes, manifest=manifest,
            error=error[:2000]).where(BackupRun.id == run_id).execute(self.db))

    def history(self, limit: int = 20) -> list[BackupRun]:
        return list(BackupRun.select().order_by(BackupRun.id.desc()).limit(limit).execute(self.db))

    def last_run(self) -> BackupRun | None:
        return BackupRun.select().order_by(BackupRun.id.desc()).first(self.db)

    def last_success(self) -> BackupRun | None:
        return (BackupRun.select().where(BackupRun.result == "success")
                .order_by(BackupRun.finished_at.desc()).first(self.db))

    def last_finished_result(self, target: str) -> str | None:
        last = (BackupRun.select(BackupRun.result).where(
            (BackupRun.target == target) & (BackupRun.result != "running"))
            .order_by(BackupRun.id.desc()).first(self.db))
        return last.result if last else None

    def succeeded_since(self, start_utc: datetime.datetime) -> bool:
        return BackupRun.select().where((BackupRun.result == "success")
                                        & (BackupRun.finished_at >= start_utc)).exists(self.db)

    # -- a partial restore ----------------------------------------------------------
    def keep_only(self, studies: list[str], patients: list[str]) -> NamedIds:
        """Delete every study but the chosen ones (by Study Instance UID or Patient ID) from this (restored)
        index; return the object ids still named (looked up one at a time, never loaded). Runs inside a
        writer transaction."""
        db = self.db
        marks = lambda xs: ",".join("?" * len(xs)) or "NULL"  # noqa: E731
        keep_sql = (f"SELECT s.id FROM study s JOIN patient p ON p.id = s.patient_id "
                    f"WHERE s.study_uid IN ({marks(studies)}) OR p.patient_id IN ({marks(patients)})")
        params = [*studies, *patients]
        if not db.execute_sql(keep_sql, params).fetchall():
            raise DataDirError("none of the chosen studies or patients is in the backup's index")
        db.execute_sql(f"DELETE FROM study WHERE id NOT IN ({keep_sql})", params)  # cascades to series, instances
        db.execute_sql("DELETE FROM patient WHERE id NOT IN (SELECT patient_id FROM study)")
        db.execute_sql("DELETE FROM replaced_object")
        db.execute_sql("DELETE FROM binned_object")  # the recycle bin's objects are not fetched either
        db.execute_sql("""UPDATE patient SET
            num_studies = (SELECT count(*) FROM study WHERE study.patient_id = patient.id),
            num_series = (SELECT count(*) FROM series JOIN study ON study.id = series.study_id
                          WHERE study.patient_id = patient.id),
            num_instances = (SELECT count(*) FROM instance JOIN series ON series.id = instance.series_id
                             JOIN study ON study.id = series.study_id WHERE study.patient_id = patient.id)""")
        return NamedIds(db, "instance")
