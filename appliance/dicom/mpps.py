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
from ..index.models import utcnow
from ..index.models.retrieval import PerformedStep, WorklistItem
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


def _find_item(attrs: Dataset) -> WorklistItem | None:
    for ref in attrs.get("ScheduledStepAttributesSequence") or []:
        for keyword, column in (("StudyInstanceUID", WorklistItem.study_uid),
                                ("AccessionNumber", WorklistItem.accession),
                                ("ScheduledProcedureStepID", WorklistItem.step_id)):
            value = str(ref.get(keyword, "") or "").strip()
            if value:
                item = WorklistItem.get_or_none(column == value)
                if item is not None:
                    return item
    return None


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

        def write():
            if PerformedStep.get_or_none(PerformedStep.sop_uid == sop_uid) is not None:
                return DUPLICATE_INSTANCE
            item = _find_item(attrs)
            PerformedStep.create(sop_uid=sop_uid, worklist_item=item, status=state, calling_ae=calling,
                                 study_uid=study_uid, modality=str(attrs.get("Modality", "") or ""),
                                 attributes=_json(attrs))
            if item is not None:
                WorklistItem.update(status=state, updated_at=utcnow()).where(WorklistItem.id == item.id).execute()
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

        def write():
            step = PerformedStep.get_or_none(PerformedStep.sop_uid == sop_uid)
            if step is None:
                return NO_SUCH_OBJECT, None
            if step.status in FINAL:
                return PROCESSING_FAILURE, None  # PS3.4 F.7.2.2.2: a final step may no longer be updated
            attrs = Dataset.from_json(step.attributes) if step.attributes else Dataset()
            for elem in mods:
                attrs[elem.tag] = elem
            step.attributes = _json(attrs)
            step.status = new_state or step.status
            step.updated_at = utcnow()
            step.save()
            if step.worklist_item_id is not None:
                WorklistItem.update(status=step.status, updated_at=utcnow()).where(
                    WorklistItem.id == step.worklist_item_id).execute()
            return SUCCESS, step.study_uid

        code, study_uid = self.index.writer.run(write)
        if code != SUCCESS:
            return code, None
        log.info("MPPS %s set %s by %s", sop_uid, new_state or "(attributes)", calling)
        self.audit.record("dicom.mpps", f"dicom:{calling}", study_uid=study_uid or "", detail=new_state or "N-SET")
        return SUCCESS, mods
