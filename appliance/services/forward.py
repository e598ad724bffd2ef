"""Auto-forwarding: every stored instance that matches a rule is sent to a registered peer.

Rules come from ``[forward] rules``, one string each::

    "READPACS"                       forward everything to READPACS
    "READPACS modality=CT,MR"        only these modalities
    "READPACS calling=US1,US2"       only what these AE titles sent
    "READPACS modality=US calling=US1"   both conditions

Durability: the queue row (``ForwardJob``) is written by ``enqueue``, which the
ingest path runs inside the same transaction as the instance's index rows,
so an acknowledged instance always has its forward job, even across a crash.
The worker thread sends due jobs per destination on one association, marks
each sent job in the index right after the peer's success status, and
reschedules failures with exponential back-off (``retry_initial_seconds``
doubling up to ``retry_max_seconds``). With ``max_attempts = 0`` it never
gives up, so a reading PACS that is down for a day gets everything when it
comes back. A job marked sent is never sent again; a crash between the
peer's success and that mark can send that one instance a second time (the
same bytes under the same UID, which a PACS treats as a duplicate).

One object never blocks the queue: a job that cannot succeed by waiting (the peer
accepted no context the box can fill for it, the peer answered with a failure
status, or the object cannot be read or encoded) is marked failed with its reason
at once and the next job goes out on the same association. Only what is transient
(the peer unreachable or the association lost) is retried, with back-off per peer.
``forward retry`` queues failed jobs again, ``forward drop`` removes them.
"""
from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Iterable

from ..archive import Archive
from ..convert.transcode import TranscodeError
from ..dicom.scu import ObjectSender, Outgoing, SendError, associate, storage_contexts
from ..dicom.status import STORE_OK
from ..errors import ConfigError
from ..index import Index, utcnow
from ..index.forwarding import ForwardJob, Retry
from ..lifecycle import PeriodicTask
from ..records.instances import InstanceAttributes
from ..records.peers import PeerError, PeerRegistry

log = logging.getLogger(__name__)
OK_STATUSES = STORE_OK  # success, and the storage warnings (coercion, elements discarded)


@dataclass(frozen=True)
class Rule:
    destination: str
    modalities: frozenset[str] = frozenset()
    callers: frozenset[str] = frozenset()

    def matches(self, modality: str, calling_ae: str) -> bool:
        if self.modalities and modality.upper() not in self.modalities:
            return False
        if self.callers and calling_ae not in self.callers:
            return False
        return True


def parse_rules(texts: Iterable[str]) -> list[Rule]:
    rules = []
    for text in texts:
        parts = text.split()
        if not parts:
            continue
        conditions: dict[str, frozenset[str]] = {}
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            if not sep or key not in ("modality", "calling") or not value:
                raise ConfigError(f"[forward] rules: cannot read {part!r} in {text!r}; write e.g. "
                                  "\"READPACS modality=CT,MR calling=US1\"")
            values = frozenset(v.strip() for v in value.split(",") if v.strip())
            conditions[key] = frozenset(v.upper() for v in values) if key == "modality" else values
        rules.append(Rule(parts[0], conditions.get("modality", frozenset()), conditions.get("calling", frozenset())))
    return rules


def calling_ae_of(origin) -> str:
    return origin.detail.split("@", 1)[0] if origin.kind == "dicom" else ""


class Forwarder:
    def __init__(self, *, index: Index, archive: Archive, peers: PeerRegistry, ae_title: str, rules: list[Rule],
                 retry_initial: float = 30, retry_max: float = 3600, max_attempts: int = 0, batch: int = 200,
                 timeout: float = 30, audit=None):
        self.index = index
        self.audit = audit
        self.archive = archive
        self.peers = peers
        self.ae_title = ae_title
        self.rules = rules
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.batch = batch
        self.timeout = timeout
        self.sender = ObjectSender(archive)
        self._task = PeriodicTask("forwarder", self.run_once, self._idle_seconds, join_seconds=timeout + 5)
        self._held_until: dict[str, datetime.datetime] = {}  # unreachable peers: next attempt (in memory)

    # -- queueing (inside the ingest transaction) ---------------------------
    def enqueue(self, attributes: InstanceAttributes, object_id: str, origin) -> None:
        calling = calling_ae_of(origin)
        destinations = sorted({r.destination for r in self.rules if r.matches(attributes.modality, calling)})
        now = utcnow()
        for destination in destinations:
            if destination == calling:
                continue  # never send an object back to where it came from
            # While a peer is known to be down, new work waits for its next attempt too, so a busy
            # modality does not make us knock on a dead peer's door once per image.
            due = max(now, self._held_until.get(destination, now))
            self.index.forwarding.enqueue(attributes.sop_uid, object_id, destination, due)

    def wake(self, **_payload) -> None:
        self._task.wake()

    # -- the worker -----------------------------------------------------------
    name = "forwarder"

    def start(self) -> None:
        if self.rules:
            self._task.start()

    def stop(self) -> None:
        self._task.stop()

    def _idle_seconds(self) -> float:
        due = self.index.forwarding.next_due()
        if due is None:
            return 60.0
        return max(0.05, min(60.0, (due - utcnow()).total_seconds()))

    def run_once(self) -> int:
        """Send every job that is due; return how many were sent."""
        sent = 0
        now = utcnow()
        destinations = self.index.forwarding.due_destinations(now)
        for destination in destinations:
            if self._task.stopping:
                break
            sent += self._send_due(destination, now)
        return sent

    def _send_due(self, destination: str, now: datetime.datetime) -> int:
        jobs = self.index.forwarding.due_jobs(destination, now, self.batch)
        peer = self.peers.get(destination)
        if peer is None or not peer.can_receive_moves:
            self._retry(jobs, f"{destination} is not a registered peer allowed to receive images")
            return 0
        rows = self.index.forwarding.stored_objects(j.object_id for j in jobs)
        gone = [j for j in jobs if j.object_id not in rows]
        if gone:
            self._finish(gone, "dropped", "the instance is no longer stored (deleted or replaced)")
        jobs = [j for j in jobs if j.object_id in rows]
        if not jobs:
            return 0
        outgoing = {j.id: Outgoing(rows[j.object_id][0], j.sop_uid, j.object_id, rows[j.object_id][1])
                    for j in jobs}
        try:
            assoc = associate(self.ae_title, peer.ae_title, peer.host, peer.port,
                              storage_contexts((o.SOPClassUID, o.transfer_syntax) for o in outgoing.values()),
                              self.timeout, tls_args=self.peers.tls_args(peer))
        except (SendError, PeerError) as exc:
            log.warning("forwarding to %s postponed: %s", destination, exc)
            self._retry(jobs, str(exc), hold_destination=destination)
            return 0
        self._held_until.pop(destination, None)
        sent = 0
        try:
            for job in jobs:
                if self._task.stopping or not assoc.is_established:
                    break
                try:
                    outcome = self.sender.send(assoc, outgoing[job.id])
                except SendError as exc:  # no answer, association lost: transient, back off
                    self._retry([job], str(exc), hold_destination=destination)
                    break
                except TranscodeError as exc:  # no acceptable context for this object: waiting will not help
                    self._fail(job, destination, str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - an unreadable object must not stop the queue
                    log.exception("forwarding instance %s to %s failed", job.sop_uid, destination)
                    self._fail(job, destination, f"cannot send this object: {exc}")
                    continue
                if outcome.status in OK_STATUSES:
                    self._finish([job], "sent", "")
                    sent += 1
                else:
                    self._fail(job, destination, f"{destination} refused it with C-STORE status 0x{outcome.status:04X}")
        finally:
            if assoc.is_established:
                assoc.release()
        log.info("forwarded %d instance(s) to %s", sent, destination)
        if sent and self.audit is not None:
            self.audit.record("dicom.forward", "system", detail=f"{sent} instance(s) to {destination}")
        return sent

    def _finish(self, jobs: list[ForwardJob], state: str, error: str) -> None:
        self.index.forwarding.finish([j.id for j in jobs], state, error)

    def _fail(self, job: ForwardJob, destination: str, reason: str) -> None:
        log.warning("forwarding instance %s to %s failed for good: %s", job.sop_uid, destination, reason)
        self._finish([job], "failed", reason)

    def _retry(self, jobs: list[ForwardJob], error: str, hold_destination: str | None = None) -> None:
        """Count a failed attempt and schedule the next; with ``hold_destination`` (the peer is
        unreachable) its other pending jobs wait as long, so a down peer is tried once per back-off."""
        latest = utcnow()
        retries = []
        for job in jobs:
            attempts = job.attempts + 1
            give_up = self.max_attempts and attempts >= self.max_attempts
            delay = min(self.retry_initial * (2 ** (attempts - 1)), self.retry_max)
            when = utcnow() + datetime.timedelta(seconds=delay)
            latest = max(latest, when)
            retries.append(Retry(job.id, attempts, "failed" if give_up else "pending", when))
        if hold_destination:
            self._held_until[hold_destination] = latest
        self.index.forwarding.retry(retries, error, (hold_destination, latest) if hold_destination else None)

    # -- status and administration --------------------------------------------
    def status(self) -> list[dict]:
        """Per destination: counts by state, the next attempt and the last error."""
        return self.index.forwarding.status()

    def retry_failed(self, destination: str | None = None) -> int:
        """Put failed jobs back in the queue, due now."""
        count = self.index.forwarding.retry_failed(destination)
        self._task.wake()
        return count

    def failed(self, destination: str | None = None) -> list[dict]:
        """The failed jobs with their reasons (for ``forward status`` and the admin page)."""
        return self.index.forwarding.failed_jobs(destination)

    def drop(self, job_id: int | None = None, destination: str | None = None) -> int:
        """Drop one job by id, or every failed job (of ``destination``); return how many."""
        return self.index.forwarding.drop(job_id, destination)
