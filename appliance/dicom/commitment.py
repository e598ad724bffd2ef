"""Storage Commitment Push Model SCP (PS3.4 Annex J).

A modality sends N-ACTION listing the instances it wants us to take
responsibility for. We answer at once, then check each one: committed only if
its index row is committed (ingest writes it after the fsynced archive put),
with the same SOP Class, and its archive object decrypts and matches the
recorded SHA-256. The result goes
back as an N-EVENT-REPORT on the same association when the modality keeps it
open, otherwise on a new association to the registered peer with the calling
AE title (we take the SCP role in it, negotiated with role selection).

Durability: the request is stored in the index (``index.commitments``) before the
N-ACTION is answered, and stays there until a report was delivered. A report the
requester did not take (released at once and not listening, down, unknown) is
tried again on a new association with back-off (``retry_initial`` doubling up to
``retry_max``) by a background task, across restarts of the box and of the
requester; the references are checked again at each attempt.
"""
from __future__ import annotations

import logging
import threading
import time

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from ..archive import Archive
from ..errors import ApplianceError
from ..index import Index, utcnow
from ..index.commitments import Request
from ..index.studies import StudiesRepo
from ..lifecycle import PeriodicTask
from ..records.instances import StoredInstance
from ..records.peers import PeerRegistry
from .registry import DimseService, Handler
from .status import (
    CLASS_INSTANCE_CONFLICT,
    INVALID_ARGUMENT,
    NO_SUCH_ACTION,
    NO_SUCH_OBJECT,
    PROCESSING_FAILURE,
    SUCCESS,
)

log = logging.getLogger(__name__)
INSTANCE_UID = "1.2.840.10008.1.20.1.1"  # the well-known Storage Commitment Push Model SOP Instance
SAME_ASSOCIATION_GRACE = 0.3  # seconds


def check_references(archive: Archive, studies: StudiesRepo, references) -> tuple[list[Dataset], list[Dataset]]:
    """Split referenced instances into (committed, failed with a FailureReason)."""
    committed, failed = [], []
    for ref in references:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.get("ReferencedSOPClassUID", "")
        item.ReferencedSOPInstanceUID = ref.get("ReferencedSOPInstanceUID", "")
        row = studies.find_instance(str(item.ReferencedSOPInstanceUID))
        if row is None or not archive.exists(row.object_id):
            item.FailureReason = NO_SUCH_OBJECT
            failed.append(item)
        elif row.sop_class_uid != str(item.ReferencedSOPClassUID):
            item.FailureReason = CLASS_INSTANCE_CONFLICT
            failed.append(item)
        elif not _intact(archive, row):
            item.FailureReason = PROCESSING_FAILURE
            failed.append(item)
        else:
            committed.append(item)
    return committed, failed


def _intact(archive: Archive, row: StoredInstance) -> bool:
    """Decrypt and check the whole object against its recorded digest before taking responsibility
    for it (this runs in the background thread, after the N-ACTION was answered)."""
    try:
        archive.verify(row.object_id, row.sha256)
    except ApplianceError as exc:
        log.error("storage commitment: instance %s fails its integrity check: %s", row.sop_uid, exc)
        return False
    return True


def event_report(transaction_uid: str, committed: list[Dataset], failed: list[Dataset],
                 retrieve_ae: str) -> tuple[int, Dataset]:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    if committed:
        ds.RetrieveAETitle = retrieve_ae
        ds.ReferencedSOPSequence = Sequence(committed)
    if failed:
        ds.FailedSOPSequence = Sequence(failed)
    return (2 if failed else 1), ds


def _reference(sop_class: str, sop_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = sop_uid
    return ref


class CommitmentService:
    name = "storage commitment reports"

    def __init__(self, archive: Archive, index: Index, peers: PeerRegistry, ae_title: str, audit,
                 timeout: float = 30.0, retry_initial: float = 30.0, retry_max: float = 3600.0):
        self.archive = archive
        self.index = index
        self.peers = peers
        self.ae_title = ae_title
        self.audit = audit
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._task = PeriodicTask(self.name, self.run_once, self._idle_seconds, retry_seconds=60,
                                  join_seconds=timeout + 5)

    def service(self) -> DimseService:
        # The N-EVENT-REPORT goes back on this association, or on a new one where we take the SCP role.
        return DimseService("Storage Commitment Push Model", (StorageCommitmentPushModel,),
                            (Handler(evt.EVT_N_ACTION, self.handle_n_action),), reference="PS3.4 Annex J")

    # -- life cycle of the retry task -------------------------------------------
    def start(self) -> None:
        self._task.start()

    def stop(self) -> None:
        self._task.stop()

    def _idle_seconds(self) -> float:
        due = self.index.commitments.next_due()
        if due is None:
            return 300.0
        return max(0.5, min(300.0, (due - utcnow()).total_seconds()))

    # -- the request ------------------------------------------------------------
    def handle_n_action(self, event):
        if str(event.request.RequestedSOPClassUID) != StorageCommitmentPushModel:
            return NO_SUCH_ACTION, None
        if event.action_type != 1:
            return NO_SUCH_ACTION, None
        info = event.action_information
        transaction_uid = str(info.get("TransactionUID", "") or "")
        references = info.get("ReferencedSOPSequence")
        if not transaction_uid or not references:
            return INVALID_ARGUMENT, None
        calling = event.assoc.requestor.ae_title.strip()
        refs = [(str(r.get("ReferencedSOPClassUID", "")), str(r.get("ReferencedSOPInstanceUID", "")))
                for r in references]
        try:  # durable before we answer: the report is owed even if the box restarts now
            request = self.index.commitments.add(transaction_uid, calling, refs,
                                      first_retry_seconds=SAME_ASSOCIATION_GRACE + 2 * self.timeout)
        except Exception:  # noqa: BLE001 - no success without the stored request
            log.exception("storage commitment request from %s could not be stored", calling)
            return PROCESSING_FAILURE, None
        # Reply first; the report follows from a thread, which pynetdicom holds until the reply is sent.
        threading.Thread(target=self._report, args=(event.assoc, request), name="storage-commitment",
                         daemon=True).start()
        return SUCCESS, None

    def _result(self, request: Request) -> tuple[int, Dataset]:
        references = [_reference(c, u) for c, u in request.references]
        committed, failed = check_references(self.archive, self.index.studies, references)
        log.info("storage commitment for %s: %d committed, %d failed", request.calling_ae, len(committed),
                 len(failed))
        self.audit.record("dicom.commitment", f"dicom:{request.calling_ae}",
                          detail=f"{len(committed)} committed, {len(failed)} failed")
        return event_report(request.transaction_uid, committed, failed, self.ae_title)

    def _report(self, assoc, request: Request) -> None:
        try:
            event_type, ds = self._result(request)
            # A modality that wants the report on this association waits for it; one that releases at
            # once has its A-RELEASE handled within this grace period, and gets it on a new association.
            time.sleep(SAME_ASSOCIATION_GRACE)
            if assoc.is_established and not assoc.acse.is_release_requested() and self._send(assoc, event_type, ds):
                self.index.commitments.delivered(request.id)
                return
            self._deliver(request, event_type, ds)
        except Exception:  # noqa: BLE001 - a background thread must log, not die silently; the task retries
            log.exception("storage commitment report to %s failed; it will be tried again", request.calling_ae)

    def run_once(self) -> int:
        """Report every request that is due on a new association; return how many were delivered."""
        done = 0
        for request in self.index.commitments.due(utcnow()):
            if self._task.stopping:
                break
            event_type, ds = self._result(request)
            done += self._deliver(request, event_type, ds)
        return done

    def _deliver(self, request: Request, event_type: int, ds: Dataset) -> bool:
        error = self._send_on_new_association(request.calling_ae, event_type, ds)
        if error is None:
            self.index.commitments.delivered(request.id)
            log.info("storage commitment report %s delivered to %s", request.transaction_uid, request.calling_ae)
            return True
        delay = min(self.retry_initial * (2 ** request.attempts), self.retry_max)
        log.warning("storage commitment report for %s not delivered (%s); next attempt in %.0f s",
                    request.calling_ae, error, delay)
        self.index.commitments.postpone(request.id, error, delay)
        self._task.wake()  # recompute the next due time
        return False

    def _send(self, assoc, event_type: int, ds: Dataset) -> bool:
        try:
            rsp, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, INSTANCE_UID)
        except Exception as exc:  # noqa: BLE001 - fall back to a new association
            log.info("N-EVENT-REPORT on the open association failed (%s)", exc)
            return False
        return getattr(rsp, "Status", None) is not None

    def _send_on_new_association(self, calling: str, event_type: int, ds: Dataset) -> str | None:
        """None when the requester took the report, else why not."""
        peer = self.peers.get(calling)
        if peer is None:
            return (f"{calling} is not a registered peer, so the node cannot call it back (add it with "
                    "`pacs-appliance modality add`)")
        try:
            tls_args = self.peers.tls_args(peer)  # None unless the peer is flagged for DICOM TLS
        except ApplianceError as exc:
            return str(exc)
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args,
                             ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
        if not assoc.is_established:
            return f"cannot associate with {peer.ae_title} at {peer.host}:{peer.port}"
        try:
            if not self._send(assoc, event_type, ds):
                return "the N-EVENT-REPORT was not acknowledged"
        finally:
            assoc.release()
        return None
