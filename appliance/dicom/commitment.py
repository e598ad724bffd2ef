"""Storage Commitment Push Model SCP (PS3.4 Annex J).

A modality sends N-ACTION listing the instances it wants us to take
responsibility for. We answer at once, then check each one: committed only if
its index row is committed (ingest writes it after the fsynced archive put),
with the same SOP Class, and its archive object decrypts and matches the
recorded SHA-256. The result goes
back as an N-EVENT-REPORT on the same association when the modality keeps it
open, otherwise on a new association to the registered peer with the calling
AE title (we take the SCP role in it, negotiated with role selection).
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
from ..index.models import Instance
from ..peers import PeerRegistry
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


def check_references(archive: Archive, references) -> tuple[list[Dataset], list[Dataset]]:
    """Split referenced instances into (committed, failed with a FailureReason)."""
    committed, failed = [], []
    for ref in references:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.get("ReferencedSOPClassUID", "")
        item.ReferencedSOPInstanceUID = ref.get("ReferencedSOPInstanceUID", "")
        row = Instance.get_or_none(Instance.sop_uid == str(item.ReferencedSOPInstanceUID))
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


def _intact(archive: Archive, row: Instance) -> bool:
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


class CommitmentService:
    def __init__(self, archive: Archive, peers: PeerRegistry, ae_title: str, audit, timeout: float = 30.0):
        self.archive = archive
        self.peers = peers
        self.ae_title = ae_title
        self.audit = audit
        self.timeout = timeout

    def service(self) -> DimseService:
        # The N-EVENT-REPORT goes back on this association, or on a new one where we take the SCP role.
        return DimseService("Storage Commitment Push Model", (StorageCommitmentPushModel,),
                            (Handler(evt.EVT_N_ACTION, self.handle_n_action),), reference="PS3.4 Annex J")

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
        # Reply first; the report follows from a thread, which pynetdicom holds until the reply is sent.
        threading.Thread(target=self._report, args=(event.assoc, calling, transaction_uid, list(references)),
                         name="storage-commitment", daemon=True).start()
        return SUCCESS, None

    def _report(self, assoc, calling: str, transaction_uid: str, references: list) -> None:
        try:
            committed, failed = check_references(self.archive, references)
            event_type, ds = event_report(transaction_uid, committed, failed, self.ae_title)
            log.info("storage commitment for %s: %d committed, %d failed", calling, len(committed), len(failed))
            self.audit.record("dicom.commitment", f"dicom:{calling}",
                              detail=f"{len(committed)} committed, {len(failed)} failed")
            # A modality that wants the report on this association waits for it; one that releases at
            # once has its A-RELEASE handled within this grace period, and gets it on a new association.
            time.sleep(SAME_ASSOCIATION_GRACE)
            if assoc.is_established and not assoc.acse.is_release_requested() and self._send(assoc, event_type, ds):
                return
            self._send_on_new_association(calling, event_type, ds)
        except Exception:  # noqa: BLE001 - a background thread must log, not die silently
            log.exception("storage commitment report to %s failed", calling)

    def _send(self, assoc, event_type: int, ds: Dataset) -> bool:
        try:
            rsp, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, INSTANCE_UID)
        except Exception as exc:  # noqa: BLE001 - fall back to a new association
            log.info("N-EVENT-REPORT on the open association failed (%s)", exc)
            return False
        return getattr(rsp, "Status", None) is not None

    def _send_on_new_association(self, calling: str, event_type: int, ds: Dataset) -> None:
        peer = self.peers.get(calling)
        if peer is None:
            log.warning("storage commitment result for %s not delivered: the association closed and %s is not "
                        "a registered peer (add it with `pacs-appliance modality add`)", calling, calling)
            return
        try:
            tls_args = self.peers.tls_args(peer)  # None unless the peer is flagged for DICOM TLS
        except ApplianceError as exc:
            log.warning("storage commitment result for %s not delivered: %s", calling, exc)
            return
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args,
                             ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
        if not assoc.is_established:
            log.warning("storage commitment result for %s not delivered: cannot associate with %s:%d", calling,
                        peer.host, peer.port)
            return
        try:
            if not self._send(assoc, event_type, ds):
                log.warning("storage commitment result for %s not acknowledged", calling)
        finally:
            assoc.release()
