"""C-FIND SCP for the Patient Root and Study Root query/retrieve models.

The identifier's keys go to the shared query engine as matching keys; every
key the peer asked for is returned (empty when the index does not keep it),
as PS3.4 C.4.1.1.3.1 requires.

Records come from the index as the cursor reads them (``Index.iter_search``) and each
is encoded and sent at once. Pending responses normally leave through ``PendingSender`` with identifiers from
``IdentifierEncoder`` (both encode what is fixed for the query once, not per match:
~10x less Python per match than a pydicom Dataset through pynetdicom's send path);
``response_for`` builds the pydicom Dataset when either cannot take a query or a value.
"""
from __future__ import annotations

import itertools
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
    # Records are read, encoded and sent as the cursor gives them: a result of thousands of studies is
    # never a list in memory, and the first responses leave while the rest are still being read.
    records = index.iter_search(level, criteria_from(identifier))
    try:
        first = next(records, None)
    except QueryError as exc:
        yield status(UNABLE_TO_PROCESS, str(exc)), None
        return
    sender, encoder = fast_path(event, identifier) if first is not None else (None, None)
    matches = 0
    try:
        for record in itertools.chain((first,) if first is not None else (), records):
            matches += 1
            if event.is_cancelled:
                if sender is not None and not sender.flush():
                    return
                yield CANCELLED, None
                return
            if sender is not None:
                record["RetrieveAETitle"] = ae_title
                try:
                    data = encoder.encode(record)
                except Unencodable:
                    pass  # this one value needs pydicom: the Dataset below goes out in order, through pynetdicom
                else:
                    if not sender.send(data):
                        return  # aborted by the peer: pynetdicom sends nothing more either
                    continue
                if not sender.flush():
                    return
            yield PENDING, response_for(identifier, record, ae_title)
        if sender is not None and not sender.flush():
            return
    finally:
        records.close()
        log.info("C-FIND %s level from %s: %d match(es)", level, event.assoc.requestor.ae_title.strip(), matches)


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
