"""The durable storage commitment queue: a request is kept until its N-EVENT-REPORT is delivered.

dicom/commitment.py drives it; writes submit themselves to the index's single writer.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from peewee import fn

from .models import utcnow
from .models.commitment import CommitmentRequest as Row
from .repository import Repository


@dataclass(frozen=True)
class Request:
    id: int
    transaction_uid: str
    calling_ae: str
    references: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)
    attempts: int


def _record(row: dict) -> Request:
    return Request(row["id"], row["transaction_uid"], row["calling_ae"],
                   [tuple(r) for r in json.loads(row["references"])], row["attempts"])


class CommitmentsRepo(Repository):
    def add(self, transaction_uid: str, calling_ae: str, references: list[tuple[str, str]],
            first_retry_seconds: float = 0) -> Request:
        """Store a request (durable when this returns), due again after ``first_retry_seconds`` unless
        delivered before; a repeated Transaction UID is the same request."""
        due_at = utcnow() + datetime.timedelta(seconds=first_retry_seconds)

        def write():
            Row.insert(transaction_uid=transaction_uid, calling_ae=calling_ae, references=json.dumps(references),
                       state="pending", next_attempt_at=due_at).on_conflict_ignore().execute(self.db)
            return _record(Row.select().where(Row.transaction_uid == transaction_uid).dicts().get(self.db))

        return self.writer.run(write)

    def due(self, now: datetime.datetime, limit: int = 20) -> list[Request]:
        rows = (Row.select().where((Row.state == "pending") & (Row.next_attempt_at <= now))
                .order_by(Row.next_attempt_at).limit(limit).dicts().execute(self.db))
        return [_record(r) for r in rows]

    def next_due(self) -> datetime.datetime | None:
        when = Row.select(fn.MIN(Row.next_attempt_at)).where(Row.state == "pending").scalar(self.db)
        return datetime.datetime.fromisoformat(when) if isinstance(when, str) else when

    def delivered(self, request_id: int) -> None:
        self.writer.run(lambda: Row.update(state="delivered", delivered_at=utcnow(), last_error="",
                                           attempts=Row.attempts + 1).where(Row.id == request_id).execute(self.db))

    def postpone(self, request_id: int, error: str, delay_seconds: float) -> None:
        when = utcnow() + datetime.timedelta(seconds=delay_seconds)
        self.writer.run(lambda: Row.update(attempts=Row.attempts + 1, last_error=error[:255], next_attempt_at=when)
                        .where(Row.id == request_id).execute(self.db))

    def pending(self) -> list[dict]:
        """The requests whose report is not delivered yet (for status pages)."""
        return list(Row.select(Row.transaction_uid, Row.calling_ae, Row.attempts, Row.next_attempt_at,
                               Row.last_error).where(Row.state == "pending").order_by(Row.id).dicts()
                    .execute(self.db))
