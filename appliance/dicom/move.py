"""C-MOVE SCP (Patient Root and Study Root, every level), to registered destinations only.

pynetdicom runs the C-STORE sub-operations and keeps the pending/warning/
failure counts and the Failed SOP Instance UID List; this handler decides the
destination, finds the instances through the query engine and yields one
``Outgoing`` placeholder per instance, which ``scu.ObjectSender`` reads from the
archive and sends (exact bytes, or losslessly transcoded, or a failed
sub-operation with the reason in the log).

An unknown destination, or a peer not allowed to receive moves, gets 0xA801.
A caller registered without the retrieve permission gets 0xC001.

A requestor that is its own move destination (dcmtk's movescu, many viewers) may look
at its listening socket only now and then: movescu checks it without waiting, then
waits up to a second for data on the C-MOVE association. A sub-association that
connects in that second waited for it unanswered (~1 s of a 100-instance C-MOVE that
otherwise takes ~0.5 s). So once the sub-association's TCP connection is made, a
first Pending C-MOVE-RSP (all sub-operations remaining) goes to the requestor: it
wakes up, and then finds the connection (``PendingWake``).
"""
from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pynetdicom import build_context, evt
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from ..index import Index
from ..index.query import QueryError
from ..records.peers import PeerError, PeerRegistry
from .identifier import key_text
from .registry import DimseService, Handler
from .scu import ObjectSender, Outgoing, chain, storage_contexts
from .status import CANCELLED, IDENTIFIER_MISMATCH, NOT_PERMITTED, PENDING, status

log = logging.getLogger(__name__)
LEVEL_KEYS = {
    "PATIENT": ("PatientID",),
    "STUDY": ("PatientID", "StudyInstanceUID"),
    "SERIES": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}
PATIENT_ROOT = ("1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.1.3")  # MOVE, GET
STUDY_ROOT = ("1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.3")


class BadIdentifier(ValueError):
    pass


def unique_key(value) -> str:
    """A C-MOVE/C-GET identifier's key as text, stripped."""
    return key_text(value).strip()  # a blank unique key is no key (the query engine would match everything)


def match_instances(index: Index, identifier: Dataset, model: str) -> list[Outgoing]:
    """The stored instances a C-MOVE/C-GET identifier asks for (unique keys, PS3.4 C.4.2.2.1)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVEL_KEYS or (level == "PATIENT" and model in STUDY_ROOT):
        raise BadIdentifier(f"QueryRetrieveLevel {level or '(missing)'} not valid for this model")
    criteria = {}
    for keyword in LEVEL_KEYS[level]:
        value = unique_key(identifier.get(keyword))
        if value:
            criteria[keyword] = value
    if LEVEL_KEYS[level][-1] not in criteria:
        raise BadIdentifier(f"a {level} level retrieve needs {LEVEL_KEYS[level][-1]}")
    try:
        records = index.search("IMAGE", criteria)
    except QueryError as exc:
        raise BadIdentifier(str(exc)) from None
    return [Outgoing(r["SOPClassUID"], r["SOPInstanceUID"], r["_object_id"], r["AvailableTransferSyntaxUID"])
            for r in records]


def caller_may_retrieve(peers: PeerRegistry, calling: str) -> bool:
    return peers.permits(calling, "can_retrieve")


def service(index: Index, peers: PeerRegistry, sender: ObjectSender, audit) -> DimseService:
    return DimseService("Query/Retrieve MOVE", (PatientRootQueryRetrieveInformationModelMove,
                                                StudyRootQueryRetrieveInformationModelMove),
                        (Handler(evt.EVT_C_MOVE, handle_move, (index, peers, sender, audit)),),
                        reference="PS3.4 Annex C (C.4.2)")


def handle_move(event, index: Index, peers: PeerRegistry, sender: ObjectSender, audit):
    calling = event.assoc.requestor.ae_title.strip()
    destination = event.move_destination or ""
    if isinstance(destination, bytes):
        destination = destination.decode("ascii", "replace")
    destination = destination.strip()
    peer = peers.get(destination)
    if peer is None or not peer.can_receive_moves:
        log.warning("C-MOVE from %s to %r refused: not a registered move destination", calling, destination)
        yield None, None
        return
    try:
        tls_args = peers.tls_args(peer)  # None unless the destination is flagged for DICOM TLS
    except PeerError as exc:
        log.warning("C-MOVE from %s to %r refused: %s", calling, destination, exc)
        yield None, None
        return
    error = None
    outgoing: list[Outgoing] = []
    if not caller_may_retrieve(peers, calling):
        error = status(NOT_PERMITTED, f"{calling} is not allowed to retrieve")
    else:
        try:
            outgoing = chain(match_instances(index, event.identifier, str(event.request.AffectedSOPClassUID)))
        except BadIdentifier as exc:
            error = status(IDENTIFIER_MISMATCH, str(exc))
    # With nothing to send, a Verification context still lets pynetdicom open the (unused) association.
    contexts = (storage_contexts((o.SOPClassUID, o.transfer_syntax) for o in outgoing) if outgoing
                else [build_context(Verification)])
    handlers = sender.handlers()
    if outgoing and error is None:
        handlers.append((evt.EVT_CONN_OPEN, PendingWake(event, len(outgoing))))
    yield peer.host, peer.port, {
        "contexts": contexts,
        "evt_handlers": handlers,
        "tls_args": tls_args,
    }
    if error is not None:
        yield 1
        yield error, None
        return
    study_uids = sorted({unique_key(event.identifier.get("StudyInstanceUID"))} - {""})
    log.info("C-MOVE from %s: %d instance(s) to %s", calling, len(outgoing), destination)
    audit.record("dicom.move", f"dicom:{calling}", address=event.assoc.requestor.address,
                 patient_id=unique_key(event.identifier.get("PatientID")), study_uid=",".join(study_uids),
                 detail=f"{len(outgoing)} instance(s) to {destination}")
    yield len(outgoing)
    for out in outgoing:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        yield PENDING, out


class PendingWake:
    """EVT_CONN_OPEN of a C-MOVE's sub-association: one Pending C-MOVE-RSP to the requestor, with every
    sub-operation remaining and none done (PS3.4 C.4.2.1.6 allows Pending responses at any time during
    the sub-operations), so a requestor waiting on the C-MOVE association looks for the new connection."""

    def __init__(self, move_event, remaining: int):
        self.assoc = move_event.assoc
        self.request = move_event.request
        self.context_id = move_event.context.context_id
        self.remaining = remaining
        self.sent = False

    def __call__(self, _event) -> None:
        if self.sent or not self.assoc.is_established:
            return
        self.sent = True
        rsp = C_MOVE()
        rsp.MessageIDBeingRespondedTo = self.request.MessageID
        rsp.AffectedSOPClassUID = self.request.AffectedSOPClassUID
        rsp.Status = PENDING
        rsp.NumberOfRemainingSuboperations = self.remaining
        rsp.NumberOfCompletedSuboperations = 0
        rsp.NumberOfFailedSuboperations = 0
        rsp.NumberOfWarningSuboperations = 0
        try:  # the C-MOVE's own thread is waiting for the sub-association: nothing else sends here now
            self.assoc.dimse.send_msg(rsp, self.context_id)
        except Exception:  # noqa: BLE001 - only a wake-up: the move goes on without it
            log.debug("could not send the first Pending C-MOVE response", exc_info=True)
