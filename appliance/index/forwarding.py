"""The durable forwarding queue: one job per instance per destination (appliance/forward.py runs it).

A job's ``state`` is pending -> sent, or pending -> failed after the last retry,
or dropped when its instance is no longer stored; a sent job is never sent again.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterable

from peewee import fn

from .models import Instance, utcnow
from .models.retrieval import ForwardJob as JobRow
from .repository import Repository


@dataclass(frozen=True)
class ForwardJob:
    id: int
    sop_uid: str
    object_id: str
    destination: str  # AE title of a registered peer
    state: str
    attempts: int
    next_attempt_at: datetime.datetime
    last_error: str


@dataclass(frozen=True)
class Retry:
    """One failed attempt: the job's new attempt count, state and next due time."""

    job_id: int
    attempts: int
    state: str
    next_attempt_at: datetime.datetime


class ForwardingRepo(Repository):
    def enqueue(self, sop_uid: str, object_id: str, destination: str, due: datetime.datetime) -> None:
        """Inside the writer (the ingest transaction); an object already queued for the destination stays once."""
        JobRow.insert(sop_uid=sop_uid, object_id=object_id, destination=destination, next_attempt_at=due,
                      state="pending", attempts=0, last_error="", created_at=utcnow(),
                      ).on_conflict_ignore().execute(self.db)

    def next_due(self) -> datetime.datetime | None:
        """When the earliest pending job is due, or None."""
        due = JobRow.select(fn.MIN(JobRow.next_attempt_at)).where(JobRow.state == "pending").scalar(self.db)
        if isinstance(due, str):  # MIN() over a column loses the field's conversion
            due = datetime.datetime.fromisoformat(due)
        return due

    def due_destinations(self, now: datetime.datetime) -> list[str]:
        return list(JobRow.select(JobRow.destination).where(
            (JobRow.state == "pending") & (JobRow.next_attempt_at <= now)).distinct().scalars(self.db))

    def due_jobs(self, destination: str, now: datetime.datetime, limit: int) -> list[ForwardJob]:
        return self._all(ForwardJob, JobRow.select().where(
            (JobRow.state == "pending") & (JobRow.destination == destination)
            & (JobRow.next_attempt_at <= now)).order_by(JobRow.id).limit(limit))

    def stored_objects(self, object_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """object_id -> (SOP Class UID, transfer syntax) of those still stored as current instances."""
        query = (Instance.select(Instance.object_id, Instance.sop_class_uid, Instance.transfer_syntax)
                 .where(Instance.object_id.in_(list(object_ids))).tuples())
        return {object_id: (sop_class, ts) for object_id, sop_class, ts in query.execute(self.db)}

    def finish(self, job_ids: list[int], state: str, error: str) -> None:
        """Mark jobs sent, failed or dropped (counting the attempt)."""
        self.writer.run(lambda: JobRow.update(
            state=state, last_error=error[:255], sent_at=utcnow() if state == "sent" else None,
            attempts=JobRow.attempts + 1).where(JobRow.id.in_(job_ids)).execute(self.db))

    def retry(self, retries: list[Retry], error: str, hold: tuple[str, datetime.datetime] | None = None) -> None:
        """Record failed attempts; with ``hold`` (destination, until) that peer's other pending jobs
        wait until then too."""
        def write():
            for r in retries:
                JobRow.update(attempts=r.attempts, last_error=error[:255], state=r.state,
                              next_attempt_at=r.next_attempt_at).where(JobRow.id == r.job_id).execute(self.db)
            if hold:
                destination, until = hold
                JobRow.update(next_attempt_at=until, last_error=error[:255]).where(
                    (JobRow.destination == destination) & (JobRow.state == "pending")
                    & (JobRow.next_attempt_at < until)).execute(self.db)

        self.writer.run(write)

    def status(self) -> list[dict]:
        """Per destination: counts by state, the next attempt, the last error and the last sent time."""
        out: dict[str, dict] = {}
        for row in (JobRow.select(JobRow.destination, JobRow.state, fn.COUNT(JobRow.id).alias("n"))
                    .group_by(JobRow.destination, JobRow.state).dicts().execute(self.db)):
            entry = out.setdefault(row["destination"], {"destination": row["destination"], "pending": 0,
                                                        "sent": 0, "failed": 0, "dropped": 0})
            entry[row["state"]] = row["n"]
        for destination, entry in out.items():
            first = (JobRow.select(JobRow.next_attempt_at, JobRow.last_error)
                     .where((JobRow.destination == destination) & (JobRow.state.in_(["pending", "failed"])))
                     .order_by(JobRow.next_attempt_at).dicts().first(self.db))
            entry["next_attempt_at"] = first["next_attempt_at"] if first else None
            entry["last_error"] = first["last_error"] if first else ""
            entry["last_sent_at"] = JobRow.select(fn.MAX(JobRow.sent_at)).where(
                (JobRow.destination == destination) & (JobRow.state == "sent")).scalar(self.db)
        return sorted(out.values(), key=lambda e: e["destination"])

    def retry_failed(self, destination: str | None = None) -> int:
        """Put failed jobs back in the queue, due now; return how many."""
        cond = JobRow.state == "failed"
        if destination:
            cond &= JobRow.destination == destination
        return self.writer.run(lambda: JobRow.update(state="pending", next_attempt_at=utcnow())
                               .where(cond).execute(self.db))
