"""Index access for the recycle bin (models/bin.py; appliance/corrections/delete.py).

``bin_objects`` and ``take_batch`` run inside the writer's transaction; reads on any thread.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from .corrections import CorrectionConflict, CurrentObject
from .models.bin import BinnedObject
from .records import lookup, remove_instance


@dataclass(frozen=True)
class BinEntry:
    """One deletion still in the bin."""

    batch: str
    level: str
    study_uid: str
    uid: str  # what was deleted: the study, series or instance UID
    patient_id: str
    instances: int
    bytes: int
    deleted_at: datetime.datetime
    deleted_by: str
    reason: str
    purge_after: datetime.datetime


def bin_objects(db, objects: list[CurrentObject], level: str, batch: str, actor: str, reason: str,
                purge_after: datetime.datetime) -> int:
    """Move these current instances into the bin: their rows go, their objects stay. In a transaction."""
    for o in objects:
        inst = lookup(db, o.sop_uid)
        if inst is None or inst.object_id != o.object_id:
            raise CorrectionConflict(f"instance {o.sop_uid} changed while it was being deleted; nothing was "
                                     "deleted: look at the study again and retry")
        BinnedObject.insert(batch=batch, level=level, object_id=o.object_id, sop_uid=o.sop_uid,
                            series_uid=o.series_uid, study_uid=o.study_uid, patient_id=o.patient_id, size=o.size,
                            sha256=o.sha256, source=o.source, deleted_by=actor, reason=reason[:255],
                            purge_after=purge_after).execute(db)
        remove_instance(db, inst)
    return len(objects)


def _dt(v):
    return datetime.datetime.fromisoformat(v) if isinstance(v, str) else v


def list_bin(db, batch: str | None = None, study_uid: str | None = None) -> list[BinEntry]:
    where, params = ['"purged_at" IS NULL'], []
    if batch:
        where.append('"batch" = ?')
        params.append(batch)
    if study_uid:
        where.append('"study_uid" = ?')
        params.append(study_uid)
    rows = db.execute_sql(
        'SELECT "batch", "level", min("study_uid"), min("series_uid"), min("sop_uid"), min("patient_id"), count(*), '
        'sum("size"), min("deleted_at"), min("deleted_by"), min("reason"), min("purge_after") FROM "binned_object" '
        f'WHERE {" AND ".join(where)} GROUP BY "batch", "level" ORDER BY min("deleted_at") DESC', params).fetchall()
    out = []
    for b, level, study, series, sop, pid, n, size, at, by, reason, purge in rows:
        uid = {"study": study, "series": series}.get(level, sop)
        out.append(BinEntry(b, level, study, uid, pid, n, size or 0, _dt(at), by, reason, _dt(purge)))
    return out


def batch_objects(db, batch: str) -> list[tuple[str, str, int, str, str]]:
    """(object_id, sop_uid, size, sha256, source) of a deletion still in the bin."""
    return db.execute_sql('SELECT "object_id", "sop_uid", "size", "sha256", "source" FROM "binned_object" '
                          'WHERE "batch" = ? AND "purged_at" IS NULL ORDER BY "id"', (batch,)).fetchall()


def take_batch(db, batch: str, count: int) -> None:
    """Remove a restored deletion's rows; in the restoring transaction."""
    n = BinnedObject.delete().where((BinnedObject.batch == batch) & BinnedObject.purged_at.is_null()).execute(db)
    if n != count:
        raise CorrectionConflict(f"deletion {batch} changed while it was being restored; nothing was restored")


def due(db, now: datetime.datetime) -> list[tuple[int, str]]:
    """(row id, object id) of binned objects whose time in the bin is over."""
    return db.execute_sql('SELECT "id", "object_id" FROM "binned_object" WHERE "purged_at" IS NULL '
                          'AND "purge_after" <= ?', (now,)).fetchall()


def mark_purged(db, ids: list[int], now: datetime.datetime) -> None:
    BinnedObject.update(purged_at=now).where(BinnedObject.id.in_(ids)).execute(db)


def binned_object_ids(db) -> set[str]:
    """Objects still in the bin (kept locally and offsite)."""
    return {r[0] for r in db.execute_sql('SELECT "object_id" FROM "binned_object" WHERE "purged_at" IS NULL')}
