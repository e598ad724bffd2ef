"""C-FIND SCP for the Patient Root and Study Root query/retrieve models.

The identifier's keys go to the shared query engine as matching keys; every
key the peer asked for is returned (empty when the index does not keep it),
as PS3.4 C.4.1.1.3.1 requires.

Pending responses normally leave through ``PendingSender`` with identifiers from
``IdentifierEncoder`` (both encode what is fixed for the query once, not per match:
~10x less Python per match than a pydicom Dataset through pynetdicom's send path);
``response_for`` builds the pydicom Dataset when either cannot take a query or a value.
"""
from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pynetdicom import evt

from ..index import Index
from ..index.query import ATTRS, QueryError
from ..records.peers import PeerRegistry
from .identifier import IdentifierEncoder, Unencodable, key_text
from .pending import PendingSender
from .permissions import query_refusal
from .registry import DimseService, Handler
from .status import CANCELLED, IDENTIFIER_MISMATCH, PENDING, UNABLE_TO_PROCESS, status

log = logging.getLogger(__name__)
# PS3.4 C.6: which levels each model allows
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
LEVELS_BY_MODEL = {
    PATIENT_ROOT_FIND: ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    STUDY_ROOT_FIND: ("STUDY", "SERIES", "IMAGE"),
}


def criteria_from(identifier: Dataset) -> dict[str, str]:
    criteria = {}
    for elem in identifier:
        keyword = elem.keyword
        if keyword in ATTRS and elem.VR != "SQ":
            criteria[keyword] = key_text(elem.value)
    return criteria


def response_for(identifier: Dataset, record: dict, ae_title: str) -> Dataset:
    rsp = Dataset()
    non_ascii = False
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword == "SpecificCharacterSet":
            continue
        value = record.get(keyword, None)
        if keyword == "RetrieveAETitle":
            value = ae_title
        if value is None:
            value = ""
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and not v.isascii() for v in values):
            non_ascii = True
        try:
            setattr(rsp, keyword, value)
        except (TypeError, ValueError):
            setattr(rsp, keyword, "")
    rsp.QueryRetrieveLevel = record["QueryRetrieveLevel"]
    if non_ascii:
        rsp.SpecificCharacterSet = "ISO_IR 192"
    return rsp


def service(index: Index, ae_title: str, peers: PeerRegistry | None = None) -> DimseService:
    return DimseService("Query/Retrieve FIND", (PATIENT_ROOT_FIND, STUDY_ROOT_FIND),
                        (Handler(evt.EVT_C_FIND, handle_find, (index, ae_title, peers)),),
                        reference="PS3.4 Annex C (C.4.1)")


def handle_find(event, index: Index, ae_title: str, peers: PeerRegistry | None = None):
    refusal = query_refusal(peers, event.assoc.requestor.ae_title.strip()) if peers is not None else None
    if refusal is not None:
        yield refusal, None
        return
    identifier = event.identifier
    model = str(event.request.AffectedSOPClassUID)
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    allowed = LEVELS_BY_MODEL.get(model, ("PATIENT", "STUDY", "SERIES", "IMAGE"))
    if level not in allowed:
        yield status(IDENTIFIER_MISMATCH, f"QueryRetrieveLevel {level or '(missing)'} not valid here"), None
        return
    try:
        records = index.search(level, criteria_from(identifier))
    except QueryError as exc:
        yield status(UNABLE_TO_PROCESS, str(exc)), None
        return
    log.info("C-FIND %s level from %s: %d match(es)", level, event.assoc.requestor.ae_title.strip(), len(records))
    sender, encoder = fast_path(event, identifier) if records else (None, None)
    for record in records:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        if sender is not None:
            record["RetrieveAETitle"] = ae_title
            try:
                data = encoder.encode(record)
            except Unencodable:
                pass  # this one value needs pydicom: the Dataset below goes out in order, through pynetdicom
            else:
                if not event.assoc.is_established:
                    return  # aborted by the peer: pynetdicom sends nothing more either
                sender.send(data)
                continue
        yield PENDING, response_for(identifier, record, ae_title)


def fast_path(event, identifier: Dataset) -> tuple[PendingSender | None, IdentifierEncoder | None]:
    """The sender and encoder for this request's pending responses, or (None, None) for pynetdicom's path."""
    keywords = [elem.keyword for elem in identifier if elem.keyword]
    sender = PendingSender.for_event(event)
    if sender is None:
        return None, None
    encoder = IdentifierEncoder.for_keys(keywords + ["QueryRetrieveLevel"], explicit_vr=sender.explicit_vr)
    if encoder is None:
        return None, None
    return sender, encoder
