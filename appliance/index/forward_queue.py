"""Administration of the forwarding queue: failed jobs, dropping them, the last error per peer.

Kept apart from the queue's main reads and writes (forward.py, moving into a repository)
so the two can be folded together; every write runs on the index's single writer.
"""
from __future__ import annotations

from .models.retrieval import ForwardJob


def failed_jobs(destination: str | None = None, limit: int = 50) -> list[dict]:
    """The failed jobs (id, destination, SOP Instance UID, attempts, reason), oldest first."""
    cond = ForwardJob.state == "failed"
    if destination:
        cond &= ForwardJob.destination == destination
    return list(ForwardJob.select(ForwardJob.id, ForwardJob.destination, ForwardJob.sop_uid, ForwardJob.attempts,
                                  ForwardJob.last_error).where(cond).order_by(ForwardJob.id).limit(limit).dicts())


def last_error(destination: str) -> str:
    """The reason of the latest failed attempt to ``destination`` still in the queue (pending or failed)."""
    row = (ForwardJob.select(ForwardJob.last_error)
           .where((ForwardJob.destination == destination) & (ForwardJob.state.in_(["pending", "failed"]))
                  & (ForwardJob.last_error != ""))
           .order_by(ForwardJob.next_attempt_at.desc(), ForwardJob.id.desc()).first())
    return row.last_error if row else ""


def drop(index, job_id: int | None = None, destination: str | None = None) -> int:
    """Mark one waiting or failed job, or every failed one (of ``destination``), dropped; return how many."""
    if job_id is not None:
        cond = (ForwardJob.id == job_id) & ForwardJob.state.in_(["pending", "failed"])
    else:
        cond = ForwardJob.state == "failed"
        if destination:
            cond &= ForwardJob.destination == destination
    return index.writer.run(lambda: ForwardJob.update(state="dropped").where(cond).execute())
