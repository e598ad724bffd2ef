"""The one ingest path: every way in (C-STORE, STOW-RS, inbox, import, restore) calls ``Ingestor.store``.

The core's front door: this package holds the Ingestor (here), the parser and validator of an
incoming object (dicomfile.py) and the replaced and held versions the policy keeps (versions.py);
what it stores goes to the archive (appliance/archive) and the index (appliance/index).

Order of work, and why:

1. refuse early when storing the object would leave less free space than the
   reserve (``DiskFull``, 0xA700): nothing is parsed or written;
2. parse and validate the object (``InvalidObject``, 0xC000 with a reason);
3. if the SOP Instance UID is already indexed with the same bytes, report
   success without writing anything again (a resend stays a quiet success);
4. seal the bytes, exactly as received, into the archive (fsynced);
5. write the index rows in one committed transaction;
6. only then report success. If step 5 fails, the object from step 4 is
   deleted and the failure is reported: nothing is acknowledged that is not
   durable, and no index row ever points at nothing.

A crash between 4 and 5 leaves an unindexed object, which start-up
reconciliation reports (never a lost acknowledged image).

Replacement policy (decided in step 5, inside the indexing transaction, so two
senders cannot race it). A *different* object under a stored SOP Instance UID:

- ``[storage] on_conflict = "reject"``: refused (``ConflictRejected``);
- it names the same patient: replaces the stored one, which is kept as a
  replaced version (``pacs-appliance storage versions`` lists and restores it);
- it names another patient (PatientID/issuer differ from the stored instance's
  patient): ``[storage] on_patient_change`` decides - "reject" (the default:
  ``ReplacementRefused``, DICOM 0xC771 / HTTP 409, the reason in the error
  comment), "hold" (kept aside as a held version for an admin to accept or
  discard; the sender is told it was stored, since it is safely on disk) or
  "replace".

Each replacement, held object and refusal is logged (UID only) and emitted as
``instance_replaced``; ``audit_replacements`` turns that into an audit entry with
who sent it and the old and new patient ID and study. C-STORE, STOW-RS, the
inbox and `import` all come through here, so they behave the same.

Corrections (appliance/corrections/) change the patient on purpose, so they do not
go through the policy above: ``store_corrected`` takes the corrected objects of a
whole study or series with an Origin of kind "correction", records the batch of
object ids it will write, seals every one, then swaps all their index rows in ONE
transaction that also clears the batch (the displaced objects become replaced
versions). A crash before that commit leaves the old study whole and the new
objects named by an unfinished batch, which start-up discards (appliance/index/unfinished_batches.py);
after it, the new study whole. Forwarding hooks
run for each corrected object in the same transaction, like any stored object.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Sequence

from ..archive import Archive, StoredObject
from ..errors import ApplianceError, ConfigError, ConflictRejected, DiskFull, ReplacementRefused
from ..events import Events
from ..records.instances import InstanceAttributes, Outcome, PriorVersion
from .dicomfile import parse

if TYPE_CHECKING:  # appliance.index loads peewee and SQLCipher, which an ingest worker (only sealing) never needs:
    from ..index import Index  # store_corrected imports what it runs of the index when it runs
    from ..index.corrections import CurrentObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Where an object came from, for the index and the audit log (no patient data)."""

    kind: str  # "dicom", "stow", "import", "restore"
    detail: str = ""  # calling AE and address, user name, ...

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else self.kind


@dataclass(frozen=True)
class StoreResult:
    outcome: Outcome
    sop_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    object_id: str
    transfer_syntax: str


@dataclass(frozen=True)
class Sealed:
    """An object sealed durably into the archive and not indexed yet: what ``Ingestor.record`` takes
    (small and picklable: an ingest worker process sends it to the parent, dicom/workers.py)."""

    attributes: InstanceAttributes
    stored: StoredObject


PATIENT_CHANGE_POLICIES = ("reject", "hold", "replace")
DISK_FULL = "the disk is full: nothing was stored; free space or add storage before sending more images"


def _disk_full(exc: BaseException) -> bool:
    """True if ``exc`` (or what it was raised from: SQLite masks SQLITE_FULL behind its rollback
    error) says the disk is out of space."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "disk is full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _amount(nbytes: int) -> str:
    if nbytes < 1 << 20:
        return f"{max(nbytes, 0) // 1024} KiB"
    return f"{nbytes / (1 << 20):.0f} MiB" if nbytes >= 10 << 20 else f"{nbytes / (1 << 20):.1f} MiB"


class StoreFailed(ApplianceError):
    """The object could not be stored; the reason is in the log. Nothing was kept."""


class _Concat(io.RawIOBase):
    """Read a generated prefix, then a stream, without copying the stream."""

    def __init__(self, prefix: bytes, stream: BinaryIO):
        self._prefix = io.BytesIO(prefix)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._prefix.readinto(buffer)
        if n:
            return n
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class Ingestor:
    def __init__(self, archive: Archive, index: Index, events: Events, reserve_bytes: int,
                 on_conflict: str = "replace", on_patient_change: str = "reject", batch_lock: Path | None = None):
        if on_patient_change not in PATIENT_CHANGE_POLICIES:
            raise ConfigError(f"[storage] on_patient_change must be one of {', '.join(PATIENT_CHANGE_POLICIES)}, "
                              f"not {on_patient_change!r}")
        self.archive = archive
        self.index = index
        self.events = events
        self.reserve_bytes = reserve_bytes
        self.on_conflict = on_conflict
        self.on_patient_change = on_patient_change
        self.batch_lock = batch_lock  # held shared while a correction's batch is in flight (batches.py)
        # Functions run inside the transaction that indexes a new object, after its rows are written:
        # fn(attributes, object_id, origin). They may only write index rows (e.g. a forwarding job), so
        # that work is exactly as durable as the instance; if one raises, the store fails.
        self.record_hooks: list = []

    def check_space(self, size: int = 0) -> None:
        """Refuse when storing ``size`` more bytes would leave less than the reserve free."""
        free = self.archive.disk_free_bytes()
        if free - size < self.reserve_bytes:
            needs = f" (this object needs {_amount(size)})" if size else ""
            raise DiskFull(
                f"the archive disk is too full: {_amount(free)} free, {_amount(self.reserve_bytes)} kept in "
                f"reserve{needs}: free space or add storage before sending more images"
            )

    def store_bytes(self, data: bytes, origin: Origin) -> StoreResult:
        return self.store(io.BytesIO(data), len(data), origin)

    def store(self, src: BinaryIO, size: int, origin: Origin) -> StoreResult:
        """Store one object from a seekable stream; raise an ApplianceError if it is not stored."""
        sealed = self.seal(src, size)
        if isinstance(sealed, StoreResult):
            return sealed
        return self.record(sealed, origin)

    def seal(self, src: BinaryIO, size: int) -> Sealed | StoreResult:
        """The first half of ``store``: parse and seal the object durably (fsynced) into the archive.

        Returns what ``record`` needs, or the DUPLICATE result when the index (if this ingestor has
        one: an ingest worker process has none) already holds these exact bytes. Needs the archive
        and its key only, so it may run in another process than ``record`` (dicom/workers.py)."""
        self.check_space(size)
        parsed = parse(src, size)
        a = parsed.attributes

        existing = self._stored(a.sop_uid) if self.index is not None else None
        if existing is not None and existing[0] == self._digest(parsed.prefix, src)[0]:
            log.info("instance %s already stored (identical), nothing written", a.sop_uid)
            return self._result(Outcome.DUPLICATE, a, existing[1])

        stream = _Concat(parsed.prefix, src) if parsed.prefix else src
        try:
            return Sealed(a, self.archive.put(stream))
        except OSError as exc:
            if _disk_full(exc):
                raise DiskFull(DISK_FULL) from None
            raise

    def record(self, sealed: Sealed, origin: Origin) -> StoreResult:
        """The second half of ``store``: index a sealed object in one transaction of the index writer,
        and return only once that is durably committed (invariant 1); the object is deleted again when
        it is refused, fails, or turns out a duplicate. Emits ``instance_stored`` (and replacements)."""
        a, stored = sealed.attributes, sealed.stored
        seen: dict = {}  # the prior version, if the policy was asked (filled on the writer thread)
        try:
            pending = self.index.writer.submit(lambda: self._record(a, stored, origin, seen))
        except OSError as exc:
            self.archive.delete(stored.object_id)
            if _disk_full(exc):
                raise DiskFull(DISK_FULL) from None
            raise
        try:
            outcome = pending.result()
        except ApplianceError as exc:
            self.archive.delete(stored.object_id)
            if "prior" in seen:
                self._replacement(a, origin, seen["prior"], "refused", str(exc))
            raise
        except Exception as exc:
            self.archive.delete(stored.object_id)
            if _disk_full(exc):
                raise DiskFull(DISK_FULL) from None
            log.exception("indexing instance %s failed; the object was not kept", a.sop_uid)
            raise StoreFailed(f"the index could not record the object ({exc.__class__.__name__})") from exc
        if outcome is Outcome.DUPLICATE:  # another sender stored the same bytes meanwhile
            self.archive.delete(stored.object_id)
        result = self._result(outcome, a, stored.object_id)
        log.debug("instance %s %s from %s", a.sop_uid, outcome.value, origin.kind)
        if outcome in (Outcome.REPLACED, Outcome.HELD):
            self._replacement(a, origin, seen["prior"], outcome.value)
        self.events.emit("instance_stored", result=result, origin=origin)
        return result

    def store_corrected(self, replaces: Sequence[CurrentObject], corrected: Callable[[CurrentObject], bytes],
                        origin: Origin) -> list[StoreResult]:
        """Store a corrected copy of each current object in ``replaces`` in its place, all in one transaction.

        ``corrected(o)`` gives the corrected Part 10 bytes of ``o``; it is called one object at a time, so a
        large study is never held in memory whole. Before sealing anything, the batch (its id and the ids
        of every object it will seal) is recorded durably in the index, and the transaction that indexes
        the objects clears it: a kill in between leaves a batch that start-up and rebuild discard whole
        (index/batches.py). Raises an ApplianceError (and keeps nothing new) if any object is refused or
        the index changed meanwhile."""
        if origin.kind != "correction":
            raise ValueError("store_corrected is for corrections only (Origin kind 'correction')")
        from ..index.unfinished_batches import in_flight

        with in_flight(self.batch_lock):  # start-up in another process leaves this batch alone
            return self._store_corrected(replaces, corrected, origin)

    def _store_corrected(self, replaces, corrected, origin: Origin) -> list[StoreResult]:
        from ..index.batches import finish as finish_batch
        from ..index.corrections import NewObject, swap_instances

        batch = secrets.token_hex(16)
        ids = [self.archive.new_object_id() for _ in replaces]
        self.index.batches.begin(batch, ids)
        sealed: list[NewObject] = []
        parsed_all = []
        committed = False
        try:
            for object_id, old in zip(ids, replaces):
                data = corrected(old)
                self.check_space(len(data))
                parsed = parse(io.BytesIO(data), len(data))
                stored = self.archive.put(_Concat(parsed.prefix, io.BytesIO(data)) if parsed.prefix
                                          else io.BytesIO(data), object_id)
                sealed.append(NewObject(parsed.attributes, stored.object_id, stored.size, stored.sha256, old))
                parsed_all.append(parsed)

            def swap():
                swap_instances(self.index.db, sealed, origin.label)
                for n in sealed:
                    for hook in self.record_hooks:
                        hook(n.attributes, n.object_id, origin)
                finish_batch(self.index.db, batch)  # committed with the rows: no longer in flight

            self.index.writer.submit(swap).result()
            committed = True
        except BaseException as exc:
            if not committed:
                self.archive.delete_many(n.object_id for n in sealed)
                self.index.batches.finish(batch)
            if isinstance(exc, OSError) and _disk_full(exc):
                raise DiskFull(DISK_FULL) from None
            raise
        results = [self._result(Outcome.REPLACED, p.attributes, n.object_id) for p, n in zip(parsed_all, sealed)]
        log.info("correction by %s: %d instance(s) stored as new versions", origin.label, len(results))
        for result in results:
            self.events.emit("instance_stored", result=result, origin=origin)
        return results

    def _record(self, a, stored, origin: Origin, seen: dict) -> Outcome:
        def decide(prior: PriorVersion) -> str:
            seen["prior"] = prior
            return self.replacement_policy(prior, a)

        outcome = self.index.studies.record(a, stored.object_id, stored.size, stored.sha256, origin.label,
                                            decide=decide)
        if outcome in (Outcome.STORED, Outcome.REPLACED):  # not a held object: it is not the instance (yet)
            for hook in self.record_hooks:
                hook(a, stored.object_id, origin)
        return outcome

    def replacement_policy(self, prior: PriorVersion, a) -> str:
        """"replace" or "hold" for a different object under a stored UID; raises to refuse it.
        The messages start with what a modality shows: its Error Comment keeps only 64 characters."""
        if self.on_conflict == "reject":
            raise ConflictRejected(
                f"refused: a different object is stored under this SOP Instance UID ({a.sop_uid}); "
                "the archive is set to reject replacements ([storage] on_conflict = \"reject\")")
        if prior.patient_key == f"{a.patient_id}\x1f{a.issuer}":
            return "replace"
        if self.on_patient_change == "reject":
            raise ReplacementRefused(
                f"refused: this SOP Instance UID is stored for another patient ({a.sop_uid}); an object "
                "naming a different patient does not replace it ([storage] on_patient_change = \"reject\"): "
                "check the patient at the sending system, or send it with a new SOP Instance UID")
        return self.on_patient_change

    def _replacement(self, a, origin: Origin, prior: PriorVersion, action: str, reason: str = "") -> None:
        """Log (UIDs only) and emit a replacement, held object or refusal for the audit log."""
        other = " naming another patient" if prior.patient_key != f"{a.patient_id}\x1f{a.issuer}" else ""
        log.warning("instance %s: a different object%s from %s was %s", a.sop_uid, other, origin.label,
                    {"replaced": "stored; it replaced the earlier one (kept as a version)",
                     "held": "held for an admin (the stored one stays current)",
                     "refused": "refused"}[action])
        self.events.emit("instance_replaced", sop_uid=a.sop_uid, origin=origin, prior=prior, action=action,
                         patient_id=a.patient_id, study_uid=a.study_uid, reason=reason)

    def _stored(self, sop_uid: str) -> tuple[str, str] | None:
        return self.index.studies.stored_digest(sop_uid)

    @staticmethod
    def _digest(prefix: bytes, src: BinaryIO) -> tuple[str, int]:
        """SHA-256 and length of what the archive will hold (prefix + stream); leaves ``src`` at 0."""
        digest = hashlib.sha256(prefix)
        nbytes = len(prefix)
        src.seek(0)
        for block in iter(lambda: src.read(1 << 20), b""):
            digest.update(block)
            nbytes += len(block)
        src.seek(0)
        return digest.hexdigest(), nbytes

    @staticmethod
    def _result(outcome: Outcome, a, object_id: str) -> StoreResult:
        return StoreResult(outcome, a.sop_uid, a.sop_class_uid, a.study_uid, a.series_uid, object_id,
                           a.transfer_syntax)


REPLACEMENT_ACTIONS = {"replaced": "instance.replace", "held": "instance.replace.held",
                       "refused": "instance.replace.refused"}


def audit_replacements(audit):
    """An ``instance_replaced`` listener writing one audit entry each: who sent it, which instance, the old
    and the new patient ID and study (the audit log is in the encrypted index; logs get UIDs only)."""

    def listener(sop_uid: str, origin: Origin, prior: PriorVersion, action: str, patient_id: str, study_uid: str,
                 reason: str = "") -> None:
        audit.record(REPLACEMENT_ACTIONS[action], origin.label, patient_id=patient_id, study_uid=study_uid,
                     detail=f"SOP Instance UID {sop_uid}: patient {prior.patient_id or '(none)'} -> "
                            f"{patient_id or '(none)'}, study {prior.study_uid} -> {study_uid}"
                            + (f"; {reason}" if reason else ""))

    return listener
