"""The audit log: who did what, when, to which patient or study.

CONTRACT (others call this):
``AuditLog.record(action, actor, *, address="", patient_id="", study_uid="", detail="")``
- action: short dotted verb, e.g. "login.ok", "login.failed", "study.view",
  "study.export", "instance.delete", "user.create", "config.change",
  "dicom.association", "dicom.store", "dicom.find", "dicom.move", "import.run",
  "backup.run", "restore.run";
- actor: user name, or "dicom:<calling AE>", or "system".
It never raises into the caller and never waits for the disk: the entry is queued on
the index writer and committed with the next group commit (``flush()`` waits for it).
An audit failure is logged loudly instead.

Tamper evidence: entries live in the append-only ``audit_entry`` table (SQL triggers
refuse UPDATE and DELETE), and each entry's ``entry_hash`` is the SHA-256 of the
previous entry's hash and this entry's fields, so ``verify()`` finds the first entry
that was edited, removed or inserted out of order behind the database's back.

DICOM traffic: accepted and rejected associations are one entry each; C-FIND queries are
one "dicom.find" entry per association (count, levels, the patient ID asked for; written
by dicom/query_audit.py); stored
instances are NOT one entry each (a CT series would be thousands). Stores are
aggregated per (source, study) and written as one "dicom.store" (or "<kind>.store"
for STOW/import/restore) entry with the count, once that source has sent nothing for
that study for ``store_quiet_seconds`` (and at least every ``store_max_seconds``),
and on shutdown.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import io
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..index import utcnow
from ..index.audit import AuditEntry
from ..lifecycle import PeriodicTask

log = logging.getLogger(__name__)
GENESIS = "0" * 64
FIELDS = ("id", "at", "actor", "action", "address", "patient_id", "study_uid", "detail")


def entry_digest(prev_hash: str, entry_id: int, at: datetime.datetime, actor: str, action: str, address: str,
                 patient_id: str, study_uid: str, detail: str) -> str:
    parts = [prev_hash, str(entry_id), at.isoformat(timespec="microseconds"), actor, action, address, patient_id,
             study_uid, detail]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


@dataclass
class Verification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    message: str = ""


@dataclass
class _StoreBatch:
    actor: str
    action: str
    address: str
    study_uid: str
    count: int
    first: float
    last: float


class AuditLog:
    def __init__(self, index, events=None, store_quiet_seconds: float = 10.0, store_max_seconds: float = 60.0):
        self.index = index
        self.store_quiet = store_quiet_seconds
        self.store_max = store_max_seconds
        self._batches: dict[tuple[str, str], _StoreBatch] = {}
        self._lock = threading.Lock()
        self._flusher = PeriodicTask("audit-stores", self._flush_batches, 1.0)
        if events is not None:
            events.subscribe("association_accepted", self._on_association_accepted)
            events.subscribe("association_rejected", self._on_association_rejected)
            events.subscribe("instance_stored", self._on_instance_stored)

    # --- writing ---------------------------------------------------------------------------------
    def record(self, action: str, actor: str, *, address: str = "", patient_id: str = "", study_uid: str = "",
               detail: str = "") -> None:
        fields = dict(action=str(action)[:64], actor=str(actor)[:128], address=str(address or "")[:64],
                      patient_id=str(patient_id or "")[:64], study_uid=str(study_uid or "")[:64],
                      detail=str(detail or "")[:2000], at=utcnow())
        try:
            future = self.index.writer.post(lambda: self._append(**fields))  # not waited for
            future.add_done_callback(self._report_failure)
        except Exception:  # noqa: BLE001 - never into the caller
            log.exception("AUDIT ENTRY LOST: %s by %s", action, actor)

    @staticmethod
    def _report_failure(future) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("AUDIT ENTRY LOST: %s", exc)

    def _append(self, *, at, actor, action, address, patient_id, study_uid, detail) -> AuditEntry:
        """Runs inside the index writer's transaction, so entries are chained in commit order."""
        last_id, prev_hash = self.index.audit.last_link() or (0, GENESIS)
        entry_id = last_id + 1
        digest = entry_digest(prev_hash, entry_id, at, actor, action, address, patient_id, study_uid, detail)
        return self.index.audit.append(AuditEntry(
            id=entry_id, at=at, actor=actor, action=action, address=address, patient_id=patient_id,
            study_uid=study_uid, detail=detail, prev_hash=prev_hash, entry_hash=digest))

    def flush(self) -> None:
        """Write pending store batches, then wait until everything queued so far is committed."""
        self._flush_batches(force=True)
        self.index.writer.run(lambda: None)

    # --- reading ---------------------------------------------------------------------------------
    def query(self, *, actor: str = "", action: str = "", patient_id: str = "", study_uid: str = "",
              since: datetime.datetime | None = None, until: datetime.datetime | None = None,
              limit: int | None = 200, offset: int = 0, newest_first: bool = True) -> list[AuditEntry]:
        """Entries matching every filter given; ``action`` "login" matches "login.ok" and "login.failed"."""
        return self.index.audit.entries(actor=actor, action=action, patient_id=patient_id, study_uid=study_uid,
                                        since=since, until=until, limit=limit, offset=offset,
                                        newest_first=newest_first)

    def export_csv(self, entries: Iterable) -> Iterator[str]:
        """CSV lines (header first) for ``entries``, streamed; includes the hashes for checking elsewhere."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(FIELDS + ("prev_hash", "entry_hash"))
        for e in entries:
            writer.writerow([e.id, e.at.isoformat(timespec="microseconds") + "Z", _csv_safe(e.actor), e.action,
                             e.address, _csv_safe(e.patient_id), e.study_uid, _csv_safe(e.detail), e.prev_hash,
                             e.entry_hash])
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        yield buf.getvalue()

    def verify(self, batch: int = 5000) -> Verification:
        """Recompute the hash chain from the first entry; report the first entry that does not fit."""
        prev_hash, expected_id, checked, last_id = GENESIS, 1, 0, 0
        while True:
            rows = self.index.audit.after(last_id, batch)
            if not rows:
                return Verification(True, checked, message=f"{checked} entries, chain intact")
            for e in rows:
                if e.id != expected_id:
                    return Verification(False, checked, e.id, f"entry {expected_id} is missing (next is {e.id})")
                if e.prev_hash != prev_hash or e.entry_hash != entry_digest(
                        prev_hash, e.id, e.at, e.actor, e.action, e.address, e.patient_id, e.study_uid, e.detail):
                    return Verification(False, checked, e.id, f"entry {e.id} was altered or its predecessor was")
                prev_hash, expected_id, checked, last_id = e.entry_hash, e.id + 1, checked + 1, e.id

    # --- DICOM associations and stores -------------------------------------------------------------
    def _on_association_accepted(self, calling_ae: str, address: str, **_):
        self.record("dicom.association", f"dicom:{calling_ae}", address=address, detail="accepted")

    def _on_association_rejected(self, calling_ae: str, address: str, called_ae: str = "", reason=None, **_):
        self.record("dicom.association", f"dicom:{calling_ae}", address=address,
                    detail=f"rejected (called {called_ae!r}, reason {reason})")

    def _on_instance_stored(self, result, origin, **_):
        if origin.kind == "dicom":
            ae, _, address = (origin.detail or "").partition("@")
            actor, action = f"dicom:{ae}", "dicom.store"
        else:
            actor, action, address = origin.label, f"{origin.kind}.store", ""
        now = time.monotonic()
        key = (origin.label, result.study_uid)
        with self._lock:
            b = self._batches.get(key)
            if b is None:
                self._batches[key] = _StoreBatch(actor, action, address, result.study_uid, 1, now, now)
            else:
                b.count += 1
                b.last = now
        if not self._flusher.running:  # not serving (CLI import, tests): write at once
            self._flush_batches(force=True)

    def _flush_batches(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            due = [k for k, b in self._batches.items()
                   if force or now - b.last >= self.store_quiet or now - b.first >= self.store_max]
            batches = [self._batches.pop(k) for k in due]
        for b in batches:
            self.record(b.action, b.actor, address=b.address, patient_id=self._patient_of(b.study_uid),
                        study_uid=b.study_uid, detail=f"{b.count} instance{'s' if b.count != 1 else ''} stored")

    def _patient_of(self, study_uid: str) -> str:
        try:
            return self.index.studies.patient_id_of(study_uid) or ""
        except Exception:  # noqa: BLE001 - the entry matters more than the patient id
            log.exception("audit: could not look up the patient of a stored study")
            return ""

    name = "audit"

    def start(self) -> None:
        self._flusher.start()

    def stop(self) -> None:
        self._flusher.stop()
        self._flush_batches(force=True)


def _csv_safe(text: str) -> str:
    """Defuse spreadsheet formulas (a user name like "=HYPERLINK(...)") in the CSV export."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
