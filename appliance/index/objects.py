"""The archive objects the index names: for start-up reconciliation and integrity verification.

Every read here is bounded in memory whatever the size of the index: ids come
in object-id order straight from the unique indexes on ``object_id`` (so
reconcile.py can merge them with the archive's own sorted listing instead of
building two sets), a full verification pages through the rows by primary key
(short reads, so a run of hours never holds one read transaction open and the
WAL can be checkpointed meanwhile), and a sample is drawn by random keyset probes (one index lookup per pick).
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Iterator

from .repository import Repository

PAGE = 1000
# The tables whose rows name an archive object, with the condition a row must meet to name it.
NAMING_TABLES = (("instance", ""), ("replaced_object", ""),
                 ("binned_object", 'AND "purged_at" IS NULL'))  # deleted, restorable until purged
OBJECT_TABLES = (("instance", ""), ("replaced_object", "(replaced) "))  # rows that name a verified object
SMALL_SAMPLE_FACTOR = 4  # up to this many times the sample: read every row; else at most this many probes per pick


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
        streams = [self._ordered(table, table != "instance", also) for table, also in NAMING_TABLES]
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

    def names(self, object_id: str) -> bool:
        """Whether a row names ``object_id`` now (as ``named`` would list it): one lookup per table."""
        for table, also in NAMING_TABLES:
            if self.db.execute_sql(f'SELECT 1 FROM "{table}" WHERE "object_id" = ? {also}',
                                   (object_id,)).fetchone() is not None:
                return True
        return False

    def _id_range(self, table: str) -> tuple[int | None, int | None]:
        """The smallest and largest id of ``table``: two primary-key lookups. (One ``SELECT min(id), max(id)``
        is not: SQLite takes the min/max shortcut only for a lone min() or max(), and scanned a whole index
        instead, 1 s at 1M instances on a busy box, in front of the listener.)"""
        return self.db.execute_sql(f'SELECT (SELECT min("id") FROM "{table}"), (SELECT max("id") FROM "{table}")'
                                   ).fetchone()

    def estimate(self) -> int:
        """About how many objects the index names, from each table's id range (an index lookup, no count)."""
        total = 0
        for table, _also in NAMING_TABLES:
            lo, hi = self._id_range(table)
            total += 0 if lo is None else hi - lo + 1
        return total

    def count(self) -> int:
        """Rows that name an object (instances and replaced objects)."""
        return self.db.execute_sql(
            'SELECT (SELECT count(*) FROM "instance") + (SELECT count(*) FROM "replaced_object")').fetchone()[0]

    def rows(self) -> Iterator[ObjectRow]:
        """Every instance, then every replaced object, paged by primary key."""
        for table, prefix in OBJECT_TABLES:
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

    def sample(self, n: int, rng: random.Random | None = None) -> list[ObjectRow]:
        """About ``n`` rows picked at random (all of them, shuffled, if there are few).

        Random keyset probes: a random id between the smallest and the largest, then the first row at or
        after it through the primary key, so a pick costs one index lookup and nothing scans or holds the
        whole table (``ORDER BY random()`` read every row: seconds and a full scan at a million). Ids
        are dense (rows are deleted only by recycling and corrections), so the picks are close to uniform;
        a row just after a run of deleted ids is a little likelier to be picked."""
        rng = rng or random.Random()
        spans = []
        for table, prefix in OBJECT_TABLES:
            lo, hi = self._id_range(table)
            if lo is not None:
                spans.append((table, prefix, lo, hi - lo + 1))
        total = sum(span for *_, span in spans)
        if total <= SMALL_SAMPLE_FACTOR * n:  # few rows: read them all (at most a few times n) and shuffle
            rows = [row for table, prefix, _lo, _span in spans for row in self._page(table, prefix, 0, total)]
            rng.shuffle(rows)
            return rows[:n]
        picked: dict[tuple[str, int], ObjectRow] = {}
        for _ in range(SMALL_SAMPLE_FACTOR * n):  # a bounded number of probes: duplicates are dropped
            if len(picked) >= n:
                break
            k = rng.randrange(total)
            for table, prefix, lo, span in spans:
                if k < span:
                    break
                k -= span
            row = self.db.execute_sql(
                f'SELECT "id", "sop_uid", "object_id", "sha256", "size" FROM "{table}" WHERE "id" >= ? '
                'ORDER BY "id" LIMIT 1', (lo + k,)).fetchone()
            if row is not None:
                picked.setdefault((table, row[0]), ObjectRow(prefix + row[1], *row[2:]))
        return list(picked.values())

    def _page(self, table: str, prefix: str, after: int, limit: int) -> list[ObjectRow]:
        rows = self.db.execute_sql(
            f'SELECT "id", "sop_uid", "object_id", "sha256", "size" FROM "{table}" WHERE "id" > ? '
            'ORDER BY "id" LIMIT ?', (after, limit)).fetchall()
        return [ObjectRow(prefix + sop, oid, sha, size) for _id, sop, oid, sha, size in rows]
