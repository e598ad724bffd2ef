"""The append-only audit log's rows (appliance/records/audit.py computes the hash chain and decides what is logged)."""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from .models.web import AuditEntry as EntryRow
from .repository import Repository


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime.datetime
    actor: str
    action: str
    address: str
    patient_id: str
    study_uid: str
    detail: str
    prev_hash: str
    entry_hash: str


class AuditRepo(Repository):
    def last_link(self) -> tuple[int, str] | None:
        """(id, entry_hash) of the newest entry, or None when the log is empty."""
        return (EntryRow.select(EntryRow.id, EntryRow.entry_hash).order_by(EntryRow.id.desc())
                .tuples().first(self.db))

    def append(self, entry: AuditEntry) -> AuditEntry:
        """Inside the writer (so entries are chained in commit order)."""
        EntryRow.insert(**vars(entry)).execute(self.db)
        return entry

    def entries(self, *, actor: str = "", action: str = "", patient_id: str = "", study_uid: str = "",
                since: datetime.datetime | None = None, until: datetime.datetime | None = None,
                limit: int | None = 200, offset: int = 0, newest_first: bool = True) -> list[AuditEntry]:
        """Entries matching every filter given; ``action`` "login" matches "login.ok" and "login.failed"."""
        q = EntryRow.select()
        if actor:
            q = q.where(EntryRow.actor == actor)
        if action:
            q = q.where((EntryRow.action == action) | EntryRow.action.startswith(action.rstrip(".") + "."))
        if patient_id:
            q = q.where(EntryRow.patient_id == patient_id)
        if study_uid:
            q = q.where(EntryRow.study_uid == study_uid)
        if since:
            q = q.where(EntryRow.at >= since)
        if until:
            q = q.where(EntryRow.at < until)
        q = q.order_by(EntryRow.id.desc() if newest_first else EntryRow.id)
        if limit:
            q = q.limit(limit).offset(offset)
        return self._all(AuditEntry, q)

    def after(self, last_id: int, limit: int) -> list[AuditEntry]:
        """Up to ``limit`` entries with an id above ``last_id``, in id order (for checking the chain)."""
        return self._all(AuditEntry, EntryRow.select().where(EntryRow.id > last_id).order_by(EntryRow.id).limit(limit))
