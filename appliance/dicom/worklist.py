"""Modality Worklist SCP: C-FIND on the Modality Worklist Information Model (PS3.4 K.6).

A modality asks "what is scheduled for me today", typically with matching
keys inside the Scheduled Procedure Step Sequence (station AE title,
modality, start date range) and patient keys at the top level. Matching is
done by ``Worklist.search`` with the query engine's rules; every key the
modality asked for is returned, empty when we do not keep it.

The node's service registry routes a C-FIND on this model here and one on the
query/retrieve models to find.py (registry.py).
"""
from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from ..index.query import QueryError
from ..records.peers import PeerRegistry
from ..records.worklist import ATTRS, STEP_ATTRS, Worklist
from .identifier import key_text
from .permissions import query_refusal
from .registry import DimseService, Handler
from .status import CANCELLED, PENDING, UNABLE_TO_PROCESS, status

log = logging.getLogger(__name__)
VALUES = {
    "PatientName": "patient_name", "PatientID": "patient_id", "PatientBirthDate": "birth_date", "PatientSex": "sex",
    "AccessionNumber": "accession", "RequestedProcedureID": "requested_procedure_id",
    "RequestedProcedureDescription": "requested_procedure_description", "StudyInstanceUID": "study_uid",
    "ReferringPhysicianName": "referring_physician", "ScheduledStationAETitle": "station_ae",
    "Modality": "modality", "ScheduledProcedureStepStartDate": "scheduled_date",
    "ScheduledProcedureStepStartTime": "scheduled_time", "ScheduledPerformingPhysicianName": "performing_physician",
    "ScheduledProcedureStepID": "step_id", "ScheduledProcedureStepDescription": "step_description",
    "ScheduledProcedureStepStatus": "status",
}


def criteria_from(identifier: Dataset) -> dict[str, str]:
    criteria = {}
    for elem in identifier:
        if elem.keyword in ATTRS and elem.VR != "SQ":
            criteria[elem.keyword] = key_text(elem.value)
    steps = identifier.get("ScheduledProcedureStepSequence")
    if steps:
        for elem in steps[0]:
            if elem.keyword in STEP_ATTRS and elem.VR != "SQ":
                criteria[elem.keyword] = key_text(elem.value)
    return criteria


def _fill(template: Dataset, item) -> tuple[Dataset, bool]:
    out = Dataset()
    non_ascii = False
    for elem in template:
        keyword = elem.keyword
        if not keyword or keyword == "SpecificCharacterSet":
            continue
        if elem.VR == "SQ":
            if keyword == "ScheduledProcedureStepSequence":
                sub_template = elem.value[0] if elem.value else Dataset()
                sub, sub_non_ascii = _fill(sub_template, item)
                non_ascii |= sub_non_ascii
                setattr(out, keyword, Sequence([sub]))
            else:
                setattr(out, keyword, Sequence([]))
            continue
        field = VALUES.get(keyword)
        value = getattr(item, field) if field else ""
        if isinstance(value, str) and not value.isascii():
            non_ascii = True
        try:
            setattr(out, keyword, value)
        except (TypeError, ValueError):
            setattr(out, keyword, "")
    return out, non_ascii


def response_for(identifier: Dataset, item) -> Dataset:
    """The response for one entry: the keys asked for, and Specific Character Set ISO_IR 192 (UTF-8) when a
    value is not ASCII; asked for with only ASCII values, it is the query's own (PS3.4 K.6.1.2.2: a key
    asked for is returned)."""
    rsp, non_ascii = _fill(identifier, item)
    if non_ascii:
        rsp.SpecificCharacterSet = "ISO_IR 192"
    elif "SpecificCharacterSet" in identifier:
        rsp.SpecificCharacterSet = identifier.SpecificCharacterSet or ""
    return rsp


def service(worklist: Worklist, peers: PeerRegistry | None = None) -> DimseService:
    return DimseService("Modality Worklist", (ModalityWorklistInformationFind,),
                        (Handler(evt.EVT_C_FIND, handle_worklist_find, (worklist, peers)),),
                        reference="PS3.4 Annex K (K.6)")


def handle_worklist_find(event, worklist: Worklist, peers: PeerRegistry | None = None):
    refusal = query_refusal(peers, event.assoc.requestor.ae_title.strip()) if peers is not None else None
    if refusal is not None:
        yield refusal, None
        return
    try:
        items = worklist.search(criteria_from(event.identifier))
    except QueryError as exc:
        yield status(UNABLE_TO_PROCESS, str(exc)), None
        return
    log.info("worklist C-FIND from %s: %d match(es)", event.assoc.requestor.ae_title.strip(), len(items))
    for item in items:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        yield PENDING, response_for(event.identifier, item)
