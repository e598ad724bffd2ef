"""The durable storage commitment queue: a request is kept until its N-EVENT-REPORT is delivered.

Writes run on the index's single writer (``index.writer.run``); dicom/commitment.py drives it.
"""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from peewee import fn

from .models import utcnow
from .models.commitment import CommitmentRequest as Row


@dataclass(frozen=True)
class Request:
    id: int
    transaction_uid: str
    calling_ae: str
    references: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)
    attempts: int


def _record(row: Row) -> Request:
    return Request(row.id, row.transaction_uid, row.calling_ae, [tuple(r) for r in json.loads(row.references)],
                   row.attempts)


def add(index, transaction_uid: str, calling_ae: str, references: list[tuple[str, str]],
        first_retry_seconds: float = 0) -> Request:
    """Store a request (durable when this returns), due again after ``first_retry_seconds`` unless delivered
    before; a repeated Transaction UID is the same request."""
    due_at = utcnow() + datetime.timedelta(seconds=first_retry_seconds)

    def write():
        Row.insert(transaction_uid=transaction_uid, calling_ae=calling_ae, references=json.dumps(references),
                   state="pending", next_attempt_at=due_at).on_conflict_ignore().execute()
        return _record(Row.get(Row.transaction_uid == transaction_uid))

    return index.writer.run(write)


def due(now: datetime.datetime, limit: int = 20) -> list[Request]:
    return [_record(r) for r in Row.select().where((Row.state == "pending") & (Row.next_attempt_at <= now))
            .order_by(Row.next_attempt_at).limit(limit)]


def next_due() -> datetime.datetime | None:
    when = Row.select(fn.MIN(Row.next_attempt_at)).where(Row.state == "pending").scalar()
    return datetime.datetime.fromisoformat(when) if isinstance(when, str) else when


def delivered(index, request_id: int) -> None:
    index.writer.run(lambda: Row.update(state="delivered", delivered_at=utcnow(), last_error="",
                                        attempts=Row.attempts + 1).where(Row.id == request_id).execute())


def postpone(index, request_id: int, error: str, delay_seconds: float) -> None:
    when = utcnow() + datetime.timedelta(seconds=delay_seconds)
    index.writer.run(lambda: Row.update(attempts=Row.attempts + 1, last_error=error[:255], next_attempt_at=when)
                     .where(Row.id == request_id).execute())


def pending() -> list[dict]:
    """The requests whose report is not delivered yet (for status pages)."""
    return list(Row.select(Row.transaction_uid, Row.calling_ae, Row.attempts, Row.next_attempt_at, Row.last_error)
                .where(Row.state == "pending").order_by(Row.id).dicts())
