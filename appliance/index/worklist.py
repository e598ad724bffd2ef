"""The modality worklist and the performed procedure steps (MPPS) that update it.

The rules (which fields, their normalisation, statuses) are in appliance/records/worklist.py
and appliance/dicom/mpps.py; here are the rows and the DICOM matching over them,
with the shared query engine's rules (query.condition).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Mapping

from .models import utcnow
from .models.retrieval import PerformedStep as StepRow, WorklistItem as W
from .query import DA, PN, TEXT, TM, UID, Attr, condition
from .repository import Repository

# DICOM keyword -> (column, matching kind); the sequence keys are those of the Scheduled Procedure Step item.
ATTRS: dict[str, Attr] = {
    "PatientName": Attr("WORKLIST", W.patient_name, PN, 0x00100010),
    "PatientID": Attr("WORKLIST", W.patient_id, TEXT, 0x00100020),
    "PatientBirthDate": Attr("WORKLIST", W.birth_date, DA, 0x00100030),
    "PatientSex": Attr("WORKLIST", W.sex, TEXT, 0x00100040),
    "AccessionNumber": Attr("WORKLIST", W.accession, TEXT, 0x00080050),
    "RequestedProcedureID": Attr("WORKLIST", W.requested_procedure_id, TEXT, 0x00401001),
    "RequestedProcedureDescription": Attr("WORKLIST", W.requested_procedure_description, TEXT, 0x00321060),
    "StudyInstanceUID": Attr("WORKLIST", W.study_uid, UID, 0x0020000D),
    "ReferringPhysicianName": Attr("WORKLIST", W.referring_physician, PN, 0x00080090),
}
STEP_ATTRS: dict[str, Attr] = {
    "ScheduledStationAETitle": Attr("WORKLIST", W.station_ae, TEXT, 0x00400001),
    "Modality": Attr("WORKLIST", W.modality, TEXT, 0x00080060),
    "ScheduledProcedureStepStartDate": Attr("WORKLIST", W.scheduled_date, DA, 0x00400002),
    "ScheduledProcedureStepStartTime": Attr("WORKLIST", W.scheduled_time, TM, 0x00400003),
    "ScheduledPerformingPhysicianName": Attr("WORKLIST", W.performing_physician, PN, 0x00400006),
    "ScheduledProcedureStepID": Attr("WORKLIST", W.step_id, TEXT, 0x00400009),
    "ScheduledProcedureStepDescription": Attr("WORKLIST", W.step_description, TEXT, 0x00400007),
    "ScheduledProcedureStepStatus": Attr("WORKLIST", W.status, TEXT, 0x00400020),
}
# A modality sees what is still to do unless it asks for a status explicitly.
OPEN_STATUSES = ("SCHEDULED", "IN PROGRESS")
# What an MPPS step's Scheduled Step Attributes may name a worklist entry by, in this order.
STEP_REFERENCES = (("StudyInstanceUID", W.study_uid), ("AccessionNumber", W.accession),
                   ("ScheduledProcedureStepID", W.step_id))


@dataclass(frozen=True)
class WorklistItem:
    id: int
    patient_name: str
    patient_name_upper: str
    patient_id: str
    birth_date: str
    sex: str
    accession: str
    requested_procedure_id: str
    requested_procedure_description: str
    study_uid: str
    step_id: str
    step_description: str
    station_ae: str
    modality: str
    scheduled_date: str
    scheduled_time: str
    performing_physician: str
    referring_physician: str
    status: str  # SCHEDULED, IN PROGRESS, COMPLETED, DISCONTINUED (the last MPPS state seen)
    created_at: datetime.datetime
    updated_at: datetime.datetime


@dataclass(frozen=True)
class PerformedStep:
    id: int
    sop_uid: str
    worklist_item_id: int | None
    status: str
    calling_ae: str
    study_uid: str
    modality: str
    attributes: str  # the last attribute list received, DICOM JSON
    created_at: datetime.datetime
    updated_at: datetime.datetime


def _steps():
    return StepRow.select(StepRow, StepRow.worklist_item.alias("worklist_item_id"))


class WorklistRepo(Repository):
    # --- scheduled steps ------------------------------------------------------------------------------

    def get(self, item_id: int) -> WorklistItem | None:
        return self._first(WorklistItem, W.select().where(W.id == item_id))

    def search(self, criteria: Mapping[str, Any], *, open_only: bool = True,
               case_sensitive_names: bool = False) -> list[WorklistItem]:
        """Entries matching ``criteria`` (DICOM keywords of ATTRS and STEP_ATTRS), by scheduled time."""
        query = W.select()
        for keyword, value in criteria.items():
            attr = ATTRS.get(keyword) or STEP_ATTRS.get(keyword)
            value = "" if value is None else str(value).strip()
            if attr is None or not value or value == "*":
                continue
            if attr.kind == PN and attr.field is W.patient_name and not case_sensitive_names:
                attr, value = Attr(attr.level, W.patient_name_upper, TEXT, attr.tag), value.upper()
            query = query.where(condition(attr, value, case_sensitive_names, False))
        if open_only and not str(criteria.get("ScheduledProcedureStepStatus") or "").strip():
            query = query.where(W.status.in_(OPEN_STATUSES))
        return self._all(WorklistItem, query.order_by(W.scheduled_date, W.scheduled_time, W.id))

    def add(self, values: Mapping[str, Any]) -> WorklistItem:
        def write():
            now = utcnow()
            item_id = W.insert(created_at=now, updated_at=now, **values).execute(self.db)
            return self.get(item_id)

        return self.writer.run(write)

    def update(self, item_id: int, values: Mapping[str, Any]) -> WorklistItem:
        def write():
            W.update(updated_at=utcnow(), **values).where(W.id == item_id).execute(self.db)
            return self.get(item_id)

        return self.writer.run(write)

    def remove(self, item_id: int) -> None:
        self.writer.run(lambda: W.delete().where(W.id == item_id).execute(self.db))

    def remove_scheduled_before(self, cutoff: str) -> int:
        """Remove entries scheduled before ``cutoff`` (YYYYMMDD); return how many."""
        return self.writer.run(lambda: W.delete().where(W.scheduled_date < cutoff).execute(self.db))

    # --- performed steps (MPPS) --------------------------------------------------------------------------

    def performed_steps(self, item_id: int) -> list[PerformedStep]:
        return self._all(PerformedStep, _steps().where(StepRow.worklist_item == item_id).order_by(StepRow.id))

    def step(self, sop_uid: str) -> PerformedStep | None:
        return self._first(PerformedStep, _steps().where(StepRow.sop_uid == sop_uid))

    def item_for_step(self, references: list[Mapping[str, Any]]) -> WorklistItem | None:
        """The entry the first Scheduled Step Attributes item names (STEP_REFERENCES), or None."""
        for ref in references:
            for keyword, column in STEP_REFERENCES:
                value = str(ref.get(keyword, "") or "").strip()
                if value:
                    item = self._first(WorklistItem, W.select().where(column == value))
                    if item is not None:
                        return item
        return None

    def add_step(self, *, sop_uid: str, worklist_item_id: int | None, status: str, calling_ae: str,
                 study_uid: str, modality: str, attributes: str) -> None:
        """Inside the writer; the entry it refers to takes its status."""
        now = utcnow()
        StepRow.insert(sop_uid=sop_uid, worklist_item=worklist_item_id, status=status, calling_ae=calling_ae,
                       study_uid=study_uid, modality=modality, attributes=attributes, created_at=now,
                       updated_at=now).execute(self.db)
        if worklist_item_id is not None:
            W.update(status=status, updated_at=now).where(W.id == worklist_item_id).execute(self.db)

    def update_step(self, step: PerformedStep, *, status: str, attributes: str) -> None:
        """Inside the writer; the entry it refers to takes its status."""
        now = utcnow()
        StepRow.update(status=status, attributes=attributes, updated_at=now).where(
            StepRow.id == step.id).execute(self.db)
        if step.worklist_item_id is not None:
            W.update(status=status, updated_at=now).where(W.id == step.worklist_item_id).execute(self.db)
