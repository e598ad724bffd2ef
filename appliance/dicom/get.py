"""C-GET SCP (Patient Root and Study Root): the instances go back on the requestor's own association.

The requestor proposes storage contexts with SCP/SCU role selection (the
node accepts the SCP role for every storage SOP class: ``requestor_scp_for``); pynetdicom
counts the sub-operations and the failed SOP Instance UIDs. Each instance is
sent by ``scu.ObjectSender``: stored bytes when the requestor accepted the
stored transfer syntax, a lossless transcode when not, otherwise a failed
sub-operation.
"""
from __future__ import annotations

import logging

from pynetdicom import evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

from ..index import Index
from ..peers import PeerRegistry
from .move import BadIdentifier, _text, caller_may_retrieve, match_instances
from .registry import DimseService, Handler
from .scu import ObjectSender
from .status import CANCELLED, IDENTIFIER_MISMATCH, NOT_PERMITTED, PENDING, status
from .store import STORAGE_SOP_CLASSES

log = logging.getLogger(__name__)


def service(index: Index, peers: PeerRegistry, sender: ObjectSender, audit) -> DimseService:
    return DimseService("Query/Retrieve GET", (PatientRootQueryRetrieveInformationModelGet,
                                               StudyRootQueryRetrieveInformationModelGet),
                        (Handler(evt.EVT_C_GET, handle_get, (index, peers, sender, audit)),),
                        requestor_scp_for=STORAGE_SOP_CLASSES, reference="PS3.4 Annex C (C.4.3)")


def handle_get(event, index: Index, peers: PeerRegistry, sender: ObjectSender, audit):
    calling = event.assoc.requestor.ae_title.strip()
    if not caller_may_retrieve(peers, calling):
        yield 1
        yield status(NOT_PERMITTED, f"{calling} is not allowed to retrieve"), None
        return
    try:
        outgoing = match_instances(index, event.identifier, str(event.request.AffectedSOPClassUID))
    except BadIdentifier as exc:
        yield 1
        yield status(IDENTIFIER_MISMATCH, str(exc)), None
        return
    sender.install(event.assoc)
    log.info("C-GET from %s: %d instance(s)", calling, len(outgoing))
    audit.record("dicom.get", f"dicom:{calling}", address=event.assoc.requestor.address,
                 study_uid=_text(event.identifier.get("StudyInstanceUID")), detail=f"{len(outgoing)} instance(s)")
    yield len(outgoing)
    for out in outgoing:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        yield PENDING, out
