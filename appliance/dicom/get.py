"""C-GET SCP (Patient Root and Study Root): the instances go back on the requestor's own association.

The requestor proposes storage contexts with SCP/SCU role selection (the
node accepts the SCP role for every storage SOP class: ``requestor_scp_for``);
``get_loop.serve_get`` runs ``handle_get``'s sub-operations and counts them and the failed
SOP Instance UIDs (pynetdicom's ``_get_scp`` rules, without its per-message cost). Each instance is
sent by ``scu.ObjectSender``: stored bytes when the requestor accepted the
stored transfer syntax, a lossless transcode when not, otherwise a failed
sub-operation.

Which syntax the box accepts in each of those contexts decides what it can send:
pynetdicom takes the requestor's first, so a ``getscu +xs`` context [JPEG lossless,
explicit LE, implicit LE] would be accepted as JPEG lossless and every uncompressed
object fail (the box never compresses). ``prefer_producible`` (an EVT_REQUESTED
watcher) puts the little endian syntaxes the box produces from anything first in the
contexts offered with the SCP role, so such a context is accepted as one the box can
always fill; a context offered with compressed syntaxes only is still accepted as
offered (its objects go out exactly, the rest fail with the reason).
"""
from __future__ import annotations

import logging

from pynetdicom import evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

from ..convert.transcode import FALLBACKS
from ..index import Index
from ..records.peers import PeerRegistry
from .move import BadIdentifier, caller_may_retrieve, match_instances, unique_key
from .get_loop import install as own_sub_operation_loop
from .registry import DimseService, Handler
from .request_cache import DecodedRequests
from .scu import ObjectSender, chain
from .status import CANCELLED, IDENTIFIER_MISMATCH, NOT_PERMITTED, PENDING, status
from .store import STORAGE_SOP_CLASSES

log = logging.getLogger(__name__)


def service(index: Index, peers: PeerRegistry, sender: ObjectSender, audit) -> DimseService:
    return DimseService("Query/Retrieve GET", (PatientRootQueryRetrieveInformationModelGet,
                                               StudyRootQueryRetrieveInformationModelGet),
                        (Handler(evt.EVT_C_GET, handle_get, (index, peers, sender, audit)),),
                        requestor_scp_for=STORAGE_SOP_CLASSES, reference="PS3.4 Annex C (C.4.3)")


def prefer_producible(event) -> None:
    """EVT_REQUESTED: reorder the syntaxes of contexts the requestor offers with the SCP role (see above)."""
    assoc = event.assoc
    if not assoc.is_acceptor:
        return
    scp_classes = {str(uid) for uid, item in assoc.requestor.role_selection.items() if item.scp_role}
    if not scp_classes:
        return
    for cx in assoc.requestor.primitive.presentation_context_definition_list or ():
        if str(cx.abstract_syntax) in scp_classes:
            offered = cx.transfer_syntax
            first = [ts for ts in FALLBACKS if ts in offered]
            reordered = first + [ts for ts in offered if ts not in first]
            if reordered != offered:
                # UID objects already checked (pydicom's constants, pynetdicom's decoding): the setter would
                # check each again, ~0.7 ms for getscu's 121 contexts on every association
                cx._transfer_syntax = reordered


def watchers() -> list:
    """The notification handlers C-GET needs on the node (DicomNode.watch): the syntaxes it can fill first,
    getscu's repeated association request decoded once (request_cache.py), the sub-operations run by
    get_loop.py."""
    return [(evt.EVT_REQUESTED, prefer_producible), *DecodedRequests().handlers(),
            (evt.EVT_ESTABLISHED, own_sub_operation_loop)]


def handle_get(event, index: Index, peers: PeerRegistry, sender: ObjectSender, audit):
    calling = event.assoc.requestor.ae_title.strip()
    if not caller_may_retrieve(peers, calling):
        yield 1
        yield status(NOT_PERMITTED, f"{calling} is not allowed to retrieve"), None
        return
    try:
        outgoing = chain(match_instances(index, event.identifier, str(event.request.AffectedSOPClassUID)))
    except BadIdentifier as exc:
        yield 1
        yield status(IDENTIFIER_MISMATCH, str(exc)), None
        return
    sender.install(event.assoc)
    log.info("C-GET from %s: %d instance(s)", calling, len(outgoing))
    audit.record("dicom.get", f"dicom:{calling}", address=event.assoc.requestor.address,
                 study_uid=unique_key(event.identifier.get("StudyInstanceUID")), detail=f"{len(outgoing)} instance(s)")
    yield len(outgoing)
    for out in outgoing:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        yield PENDING, out
