"""Modality Performed Procedure Step SCP (N-CREATE / N-SET, PS3.4 Annex F.7).

A modality creates a step IN PROGRESS when it starts an exam, and sets it
COMPLETED or DISCONTINUED at the end. Each step is kept in the index and the
worklist entry it refers to (by Study Instance UID, else accession number,
else scheduled step ID from the Scheduled Step Attributes Sequence) takes its
status, so the clinic sees in `pacs-appliance worklist list` what was done.
"""
from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from ..index import Index
from .registry import DimseService, Handler
from .status import (
    DUPLICATE_INSTANCE,
    INVALID_ATTRIBUTE_VALUE,
    NO_SUCH_CLASS,
    NO_SUCH_OBJECT,
    PROCESSING_FAILURE,
    SUCCESS,
)

log = logging.getLogger(__name__)
FINAL = ("COMPLETED", "DISCONTINUED")


def _json(ds: Dataset) -> str:
    try:
        return ds.to_json()
    except Exception:  # noqa: BLE001 - keep the step even if an odd attribute cannot be serialised
        return ""


class MppsService:
    def __init__(self, index: Index, audit):
        self.index = index
        self.audit = audit

    def service(self) -> DimseService:
        return DimseService("Modality Performed Procedure Step", (ModalityPerformedProcedureStep,),
                            (Handler(evt.EVT_N_CREATE, self.handle_n_create), Handler(evt.EVT_N_SET, self.handle_n_set)),
                            reference="PS3.4 Annex F (F.7)")

    def handle_n_create(self, event):
        if str(event.request.AffectedSOPClassUID) != ModalityPerformedProcedureStep:
            return NO_SUCH_CLASS, None
        attrs = event.attribute_list
        sop_uid = str(event.request.AffectedSOPInstanceUID or "") or generate_uid()
        state = str(attrs.get("PerformedProcedureStepStatus", "") or "").strip().upper()
        if state != "IN PROGRESS":
            return INVALID_ATTRIBUTE_VALUE, None
        calling = event.assoc.requestor.ae_title.strip()
        steps = attrs.get("ScheduledStepAttributesSequence") or []
        study_uid = str(steps[0].get("StudyInstanceUID", "") or "") if steps else ""

        worklist = self.index.worklist

        def write():
            if worklist.step(sop_uid) is not None:
                return DUPLICATE_INSTANCE
            item = worklist.item_for_step(steps)
            worklist.add_step(sop_uid=sop_uid, worklist_item_id=item.id if item else None, status=state,
                              calling_ae=calling, study_uid=study_uid, modality=str(attrs.get("Modality", "") or ""),
                              attributes=_json(attrs))
            return SUCCESS

        code = self.index.writer.run(write)
        if code != SUCCESS:
            return code, None
        log.info("MPPS %s created IN PROGRESS by %s", sop_uid, calling)
        self.audit.record("dicom.mpps", f"dicom:{calling}", study_uid=study_uid, detail="IN PROGRESS")
        return SUCCESS, attrs

    def handle_n_set(self, event):
        if str(event.request.RequestedSOPClassUID) != ModalityPerformedProcedureStep:
            return NO_SUCH_CLASS, None
        sop_uid = str(event.request.RequestedSOPInstanceUID or "")
        mods = event.modification_list
        new_state = str(mods.get("PerformedProcedureStepStatus", "") or "").strip().upper()
        if new_state and new_state not in ("IN PROGRESS", *FINAL):
            return INVALID_ATTRIBUTE_VALUE, None
        calling = event.assoc.requestor.ae_title.strip()

        worklist = self.index.worklist

        def write():
            step = worklist.step(sop_uid)
            if step is None:
                return NO_SUCH_OBJECT, None
            if step.status in FINAL:
                return PROCESSING_FAILURE, None  # PS3.4 F.7.2.2.2: a final step may no longer be updated
            attrs = Dataset.from_json(step.attributes) if step.attributes else Dataset()
            for elem in mods:
                attrs[elem.tag] = elem
            worklist.update_step(step, status=new_state or step.status, attributes=_json(attrs))
            return SUCCESS, step.study_uid

        code, study_uid = self.index.writer.run(write)
        if code != SUCCESS:
            return code, None
        log.info("MPPS %s set %s by %s", sop_uid, new_state or "(attributes)", calling)
        self.audit.record("dicom.mpps", f"dicom:{calling}", study_uid=study_uid or "", detail=new_state or "N-SET")
        return SUCCESS, mods
