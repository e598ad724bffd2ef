"""Deleting a study, series or instance (an admin's decision, with a reason), the recycle bin, restoring.

- ``delete``: one transaction removes the index rows (gone from C-FIND, QIDO, the study list and
  every retrieval at once) and records each object in the bin (``binned_object``) with the reason
  and ``purge_after`` = now + ``[storage] recycle_bin_days``. The archive objects are untouched, and
  the backup keeps them offsite (backup/snapshot.py lists binned objects as wanted).
- ``restore``: every object read back (every tag checked) and indexed again from its own header,
  and its bin rows removed, in one transaction: the study is back byte for byte under its UIDs.
- ``purge`` (hourly, and ``pacs-appliance correct bin --purge``): objects whose time is over are
  deleted from the local disk (file first, then ``purged_at``: a crash in between deletes the
  already-missing file again, harmlessly). Once purged they are no longer wanted by the backup, so
  the backup's retention removes them offsite after ``[backup]`` keeps its last snapshot naming them.

Replaced versions of a deleted instance (``storage versions``) stay as they are: history.
"""
from __future__ import annotations

import datetime
import io
import logging
import uuid

from ..errors import NotFound
from ..index import utcnow
from ..index.corrections import CorrectionConflict, series_objects, study_objects
from ..ingest.dicomfile import parse
from ..index.recycle_bin import (BinEntry, batch_objects, bin_objects, due, list_bin, mark_purged,
                                 take_batch)
from ..index.records import record
from .edit import CorrectionError

log = logging.getLogger(__name__)
LEVELS = ("study", "series", "instance")


def _instance_objects(db, sop_uid: str):
    from ..index.corrections import _objects

    return _objects(db, 'i."sop_uid" = ?', (sop_uid,))


class RecycleBin:
    def __init__(self, index, archive, audit, keep_days: int):
        self.index = index
        self.archive = archive
        self.audit = audit
        self.keep_days = keep_days

    def delete(self, level: str, uid: str, actor: str, reason: str, address: str = "") -> BinEntry:
        reason = (reason or "").strip()
        if not reason:
            raise CorrectionError("a reason is required to delete (it goes into the audit log)")
        if level not in LEVELS:
            raise CorrectionError(f"delete a study, series or instance, not {level!r}")
        finder = {"study": study_objects, "series": series_objects, "instance": _instance_objects}[level]
        objects = finder(self.index.db, uid)
        if not objects:
            raise NotFound(f"no {level} {uid} in the archive (already deleted?)")
        batch = uuid.uuid4().hex
        purge_after = utcnow() + datetime.timedelta(days=self.keep_days)
        self.index.writer.submit(lambda: bin_objects(self.index.db, objects, level, batch, actor, reason, purge_after)).result()
        [entry] = list_bin(self.index.db, batch=batch)
        self.audit.record(f"{level}.delete", actor, address=address, patient_id=objects[0].patient_id,
                          study_uid=objects[0].study_uid,
                          detail=f"reason: {reason}; {level} {uid}: {len(objects)} instance(s) moved to the recycle "
                                 f"bin (deletion {batch}), restorable until {purge_after:%Y-%m-%d %H:%M} UTC")
        log.info("%s %s deleted by %s: %d instance(s) in the recycle bin", level, uid, actor, len(objects))
        return entry

    def list(self, study_uid: str | None = None) -> list[BinEntry]:
        return list_bin(self.index.db, study_uid=study_uid)

    def restore(self, batch: str, actor: str, address: str = "") -> BinEntry:
        entries = list_bin(self.index.db, batch=batch)
        if not entries:
            raise NotFound(f"no deletion {batch} in the recycle bin (`pacs-appliance correct bin` lists them)")
        entry = entries[0]
        rows = batch_objects(self.index.db, batch)
        restored = []
        for object_id, sop_uid, size, sha256, source in rows:
            data = self.archive.read(object_id)  # every tag checked
            a = parse(io.BytesIO(data), len(data)).attributes
            if a.sop_uid != sop_uid:
                raise CorrectionConflict(f"object {object_id} holds another instance than its bin row")
            restored.append((a, object_id, size, sha256, source))

        def put_back():
            take_batch(self.index.db, batch, len(rows))
            for a, object_id, size, sha256, source in restored:
                # A new object sent under the same UID meanwhile wins: restoring refuses rather than replaces.
                record(self.index.db, a, object_id, size, sha256, source, on_conflict="reject")

        self.index.writer.submit(put_back).result()
        self.audit.record(f"{entry.level}.restore", actor, address=address, patient_id=entry.patient_id,
                          study_uid=entry.study_uid,
                          detail=f"{entry.level} {entry.uid}: {len(rows)} instance(s) restored from the recycle bin "
                                 f"(deletion {batch} by {entry.deleted_by}, reason: {entry.reason})")
        return entry

    def purge(self, now: datetime.datetime | None = None) -> int:
        """Delete the objects whose time in the bin is over; returns how many."""
        rows = due(self.index.db, now or utcnow())
        for _id, object_id in rows:
            self.archive.delete(object_id)
        if rows:
            self.index.writer.submit(lambda: mark_purged(self.index.db, [r[0] for r in rows], utcnow())).result()
            self.audit.record("bin.purge", "system", detail=f"{len(rows)} object(s) deleted from the recycle bin "
                                                            f"after {self.keep_days} days")
        return len(rows)
