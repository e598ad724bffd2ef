"""Write batches in flight (models/batch.py): what a correction will seal, recorded before it seals.

``begin`` runs in its own committed transaction before the first object is sealed; ``finish`` runs
inside the transaction that indexes the batch's objects (or, after a failure, once they are deleted),
so the rows vanish exactly when the objects stop being in flight. Rows found later (at start-up, in
the index a rebuild starts from) are batches that never committed.
"""
from __future__ import annotations

from typing import Iterable

from .models.batch import PendingObject
from .repository import Repository


class BatchesRepo(Repository):
    def begin(self, batch: str, object_ids: Iterable[str], kind: str = "correction") -> None:
        """Record the batch durably (its own transaction, committed on return)."""
        ids = list(object_ids)
        self.writer.run(lambda: begin(self.db, batch, ids, kind))

    def finish(self, batch: str) -> None:
        """Forget a batch whose objects were deleted after a failure (its own transaction)."""
        self.writer.run(lambda: finish(self.db, batch))

    def unfinished(self) -> dict[str, list[str]]:
        """batch -> its object ids, for every batch recorded and not finished (a few hundred ids each)."""
        return unfinished(self.db)


def begin(db, batch: str, object_ids: list[str], kind: str = "correction") -> None:
    for start in range(0, len(object_ids), 200):
        PendingObject.insert_many([{"batch": batch, "object_id": oid, "kind": kind}
                                   for oid in object_ids[start:start + 200]]).execute(db)


def finish(db, batch: str) -> None:
    """Inside a transaction: the batch's objects are indexed (or deleted)."""
    PendingObject.delete().where(PendingObject.batch == batch).execute(db)


def kind_of(db, batch: str) -> str:
    row = db.execute_sql('SELECT "kind" FROM "pending_object" WHERE "batch" = ? LIMIT 1', (batch,)).fetchone()
    return row[0] if row else ""


def unfinished(db) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for batch, oid in db.execute_sql('SELECT "batch", "object_id" FROM "pending_object" ORDER BY "batch", "id"'):
        out.setdefault(batch, []).append(oid)
    return out
