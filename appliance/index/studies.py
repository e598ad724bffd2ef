"""Patients, studies, series and instances: reads, the ingest recording, replaced versions.

Searching by DICOM attributes is the query engine's job (query.py, through
``Index.search``); this repository answers the direct questions the rest of
the appliance asks (one instance by UID, the instances of a study, counts).
"""
from __future__ import annotations

from . import records
from .models import Instance
from .records import InstanceAttributes, Outcome
from .repository import Repository


class StudiesRepo(Repository):
    def find_instance(self, sop_uid: str) -> Instance | None:
        return records.lookup(self.db, sop_uid)

    def stored_digest(self, sop_uid: str) -> tuple[str, str] | None:
        """(sha256, object_id) of the indexed instance with this UID. Plain SQL: this runs for every
        incoming object, and building the equivalent peewee query costs more than running it."""
        cursor = self.db.execute_sql('SELECT "sha256", "object_id" FROM "instance" WHERE "sop_uid" = ?', (sop_uid,))
        try:
            return cursor.fetchone()
        finally:
            cursor.close()  # end the read at once, not when the cursor is collected

    def record(self, a: InstanceAttributes, object_id: str, size: int, sha256: str, source: str,
               on_conflict: str = "replace") -> Outcome:
        """Index one stored object. Runs inside a writer transaction (call it from a writer function)."""
        return records.record(self.db, a, object_id, size, sha256, source, on_conflict)

    def remove_instance(self, instance: Instance) -> None:
        """Delete an instance row and keep the counts right. Runs inside a writer transaction."""
        records.remove_instance(self.db, instance)
