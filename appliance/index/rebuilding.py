"""Index-side steps of a rebuild from the archive (appliance/index/rebuild.py drives them)."""
from __future__ import annotations

from typing import Iterable

from . import records
from .objects import NamedObject, ObjectsRepo


def named_ids(db) -> set[str]:
    """Every object id the index names (instances, replaced versions, recycled objects, and deleted objects
    still restorable from the recycle bin: not current, so never recorded again as instances)."""
    rows = db.execute_sql('SELECT "object_id" FROM "instance" UNION SELECT "object_id" FROM "replaced_object" '
                          'UNION SELECT "object_id" FROM "recycled_object" '
                          'UNION SELECT "object_id" FROM "binned_object" WHERE "purged_at" IS NULL').fetchall()
    return {r[0] for r in rows}


def drop_missing(db, present: set[str]) -> list[NamedObject]:
    """Drop rows (from a snapshot) whose object is no longer in the archive: deleted after the snapshot was
    taken, or lost. Counts stay right (records.remove_instance). Call inside a transaction."""
    gone = [o for o in ObjectsRepo(db, None).named() if o.object_id not in present]
    for o in gone:
        if o.replaced:
            db.execute_sql('DELETE FROM "replaced_object" WHERE "object_id" = ?', (o.object_id,))
        else:
            records.remove_instance(db, records.lookup(db, o.sop_uid))
    return gone


def _decide(a):
    """The replacement policy replayed: every archive object was accepted, so none is refused. One naming the
    same patient replaces the earlier version; one naming another patient is held for an admin (whatever
    the policy was when it arrived: holding it makes nothing current that an admin did not accept)."""
    return lambda prior: "replace" if prior.patient_key == f"{a.patient_id}\x1f{a.issuer}" else "hold"


def record_all(db, items: Iterable[tuple], source: str) -> dict[str, int]:
    """Record (attributes, object_id, size, sha256) items through the one ingest recording code, in order:
    a later object with the same SOP Instance UID replaces an earlier one, which is kept as replaced.
    Call inside a transaction. Returns the count of each outcome."""
    counts: dict[str, int] = {}
    for attributes, object_id, size, sha256 in items:
        outcome = records.record(db, attributes, object_id, size, sha256, source, decide=_decide(attributes))
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
    return counts


def checkpoint(db) -> None:
    """Fold the WAL into the database file and empty it: the file is whole on its own (before a rename)."""
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
