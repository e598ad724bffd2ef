"""The durable forwarding queue: one job per instance per destination (appliance/services/forward.py runs it).

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


def _datetime(value) -> datetime.datetime | None:
    """MIN() over a column loses the field's conversion: SQLite hands back the stored text."""
    return datetime.datetime.fromisoformat(value) if isinstance(value, str) else value


class ForwardingRepo(Repository):
    def enqueue(self, sop_uid: str, object_id: str, destination: str, due: datetime.datetime) -> None:
        """Inside the writer (the ingest transaction); an object already queued for the destination stays once."""
        JobRow.insert(sop_uid=sop_uid, object_id=object_id, destination=destination, next_attempt_at=due,
                      state="pending", attempts=0, last_error="", created_at=utcnow(),
                      ).on_conflict_ignore().execute(self.db)

    def next_due(self) -> datetime.datetime | None:
        """When the earliest pending job is due, or None."""
        return _datetime(JobRow.select(fn.MIN(JobRow.next_attempt_at)).where(JobRow.state == "pending").scalar(self.db))

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
            entry["next_attempt_at"] = _datetime(JobRow.select(fn.MIN(JobRow.next_attempt_at)).where(
                (JobRow.destination == destination) & (JobRow.state == "pending")).scalar(self.db))
            entry["last_error"] = self.last_error(destination)
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

    def last_error(self, destination: str) -> str:
        """The reason of the latest failed attempt to ``destination`` still in the queue (pending or failed)."""
        row = (JobRow.select(JobRow.last_error)
               .where((JobRow.destination == destination) & (JobRow.state.in_(["pending", "failed"]))
                      & (JobRow.last_error != ""))
               .order_by(JobRow.next_attempt_at.desc(), JobRow.id.desc()).dicts().first(self.db))
        return row["last_error"] if row else ""

    def failed_jobs(self, destination: str | None = None, limit: int = 50) -> list[dict]:
        """The failed jobs (id, destination, SOP Instance UID, attempts, reason), oldest first."""
        cond = JobRow.state == "failed"
        if destination:
            cond &= JobRow.destination == destination
        return list(JobRow.select(JobRow.id, JobRow.destination, JobRow.sop_uid, JobRow.attempts, JobRow.last_error)
                    .where(cond).order_by(JobRow.id).limit(limit).dicts().execute(self.db))

    def drop(self, job_id: int | None = None, destination: str | None = None) -> int:
        """Mark one waiting or failed job, or every failed one (of ``destination``), dropped; return how many."""
        if job_id is not None:
            cond = (JobRow.id == job_id) & JobRow.state.in_(["pending", "failed"])
        else:
            cond = JobRow.state == "failed"
            if destination:
                cond &= JobRow.destination == destination
        return self.writer.run(lambda: JobRow.update(state="dropped").where(cond).execute(self.db))
