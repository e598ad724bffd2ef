"""The archive objects the index names: for start-up reconciliation and integrity verification.

Every read here is bounded in memory whatever the size of the index: ids come
in object-id order straight from the unique indexes on ``object_id`` (so
reconcile.py can merge them with the archive's own sorted listing instead of
building two sets), a full verification pages through the rows by primary key
(short reads, so a run of hours never holds one read transaction open and the
WAL can be checkpointed meanwhile), and a sample is drawn by SQLite.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterator

from .repository import Repository

PAGE = 1000


@dataclass(frozen=True)
class NamedObject:
    object_id: str
    sop_uid: str
    replaced: bool  # a replaced_object row (an older version), not the current instance


@dataclass(frozen=True)
class ObjectRow:
    label: str  # the SOP Instance UID, "(replaced) <uid>" for an older version
    object_id: str
    sha256: str
    size: int


class ObjectsRepo(Repository):
    def named(self) -> Iterator[NamedObject]:
        """Every object the index names, in object-id order; an id named twice comes once, as the instance."""
        streams = [self._ordered("instance", False), self._ordered("replaced_object", True),
                   self._ordered("binned_object", True, 'AND "purged_at" IS NULL')]  # deleted, restorable
        last = None
        # (object_id, replaced): for one id the instance (False) sorts first and wins, as before.
        for item in heapq.merge(*streams, key=lambda o: (o.object_id, o.replaced)):
            if item.object_id != last:
                last = item.object_id
                yield item

    def _ordered(self, table: str, replaced: bool, also: str = "") -> Iterator[NamedObject]:
        """Keyset pages over the unique object_id index: never a whole table in memory."""
        after = ""
        while True:
            rows = self.db.execute_sql(
                f'SELECT "object_id", "sop_uid" FROM "{table}" WHERE "object_id" > ? {also} '
                'ORDER BY "object_id" LIMIT ?', (after, PAGE)).fetchall()
            for oid, sop in rows:
                yield NamedObject(oid, sop, replaced)
            if len(rows) < PAGE:
                return
            after = rows[-1][0]

    def count(self) -> int:
        """Rows that name an object (instances and replaced objects)."""
        return self.db.execute_sql(
            'SELECT (SELECT count(*) FROM "instance") + (SELECT count(*) FROM "replaced_object")').fetchone()[0]

    def rows(self) -> Iterator[ObjectRow]:
        """Every instance, then every replaced object, paged by primary key."""
        for table, prefix in (("instance", ""), ("replaced_object", "(replaced) ")):
            after = 0
            while True:
                page = self.db.execute_sql(
                    f'SELECT "id", "sop_uid", "object_id", "sha256", "size" FROM "{table}" WHERE "id" > ? '
                    'ORDER BY "id" LIMIT ?', (after, PAGE)).fetchall()
                for _id, sop, oid, sha, size in page:
                    yield ObjectRow(prefix + sop, oid, sha, size)
                if len(page) < PAGE:
                    break
                after = page[-1][0]

    def sample(self, n: int) -> list[ObjectRow]:
        """``n`` rows picked uniformly at random (all of them, shuffled, if there are fewer).

        SQLite keeps only the ``n`` best rows while it scans (ORDER BY ... LIMIT), so memory stays bounded."""
        rows = self.db.execute_sql(
            'SELECT * FROM (SELECT "sop_uid", "object_id", "sha256", "size" FROM "instance" UNION ALL '
            'SELECT \'(replaced) \' || "sop_uid", "object_id", "sha256", "size" FROM "replaced_object") AS "o" '
            'ORDER BY random() LIMIT ?', (n,)).fetchall()
        return [ObjectRow(*row) for row in rows]
