"""The modality worklist: scheduled procedure steps kept in the index.

Entries are added by the CLI (``pacs-appliance worklist add``) or the web
admin, found by modalities with a Modality Worklist C-FIND (dicom/worklist.py)
and updated by MPPS (dicom/mpps.py). Matching uses the shared query engine's
DICOM matching rules (single value, wildcards, lists, date/time ranges,
case-insensitive names) over the worklist columns.

Entries whose scheduled date is more than ``[worklist] expire_days`` days in
the past are removed by ``expire`` (run hourly by the appliance).
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Mapping

from pydicom.uid import generate_uid

from .errors import ApplianceError
from .index import Index
from .index.models.retrieval import PerformedStep, WorklistItem
from .index.models import utcnow
from .index.query import DA, PN, TEXT, TM, UID, Attr, QueryError, _condition, normalize_date, normalize_time

STATUSES = ("SCHEDULED", "IN PROGRESS", "COMPLETED", "DISCONTINUED")
FIELDS = ("patient_name", "patient_id", "birth_date", "sex", "accession", "requested_procedure_id",
          "requested_procedure_description", "study_uid", "step_id", "step_description", "station_ae", "modality",
          "scheduled_date", "scheduled_time", "performing_physician", "referring_physician", "status")
W = WorklistItem
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
# The value representation of each field and its longest value (PS3.5 6.2): a modality may refuse or cut a
# longer value, so it is refused here, where a person can fix it.
LIMITS = {
    "patient_name": ("PN", 64), "patient_id": ("LO", 64), "sex": ("CS", 16), "accession": ("SH", 16),
    "requested_procedure_id": ("SH", 16), "requested_procedure_description": ("LO", 64), "study_uid": ("UI", 64),
    "step_id": ("SH", 16), "step_description": ("LO", 64), "station_ae": ("AE", 16), "modality": ("CS", 16),
    "performing_physician": ("PN", 64), "referring_physician": ("PN", 64),
}
# A modality sees what is still to do unless it asks for a status explicitly.
OPEN_STATUSES = ("SCHEDULED", "IN PROGRESS")


class WorklistError(ApplianceError):
    exit_code = 2
    http_status = 400


def _clean(changes: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise WorklistError(f"unknown worklist field(s): {', '.join(sorted(unknown))}")
    out = {k: ("" if v is None else str(v).strip()) for k, v in changes.items()}
    for key, normalize in (("scheduled_date", normalize_date), ("birth_date", normalize_date),
                           ("scheduled_time", normalize_time)):
        if out.get(key):
            try:  # the message names the field: a form has several dates
                out[key] = normalize(out[key].replace("-", "") if key.endswith("date") else out[key])
            except QueryError as exc:
                raise WorklistError(f"{key.replace('_', ' ')}: {exc}") from None
    if "status" in out and out["status"].upper() not in STATUSES:
        raise WorklistError(f"status must be one of {', '.join(STATUSES)}")
    if "status" in out:
        out["status"] = out["status"].upper()
    if "patient_name" in out:
        out["patient_name_upper"] = out["patient_name"].upper()
    for key in ("modality", "station_ae"):
        if key in out:
            out[key] = out[key].upper() if key == "modality" else out[key]
    if "sex" in out:
        out["sex"] = out["sex"].upper()
    for key, value in out.items():
        _check_vr(key, value)
    return out


def _check_vr(key: str, value: str) -> None:
    """WorklistError naming the field when ``value`` does not fit its DICOM value representation."""
    if key not in LIMITS or not value:
        return
    vr, limit = LIMITS[key]
    label = key.replace("_", " ")
    # PN: the limit holds per component group (alphabetic=ideographic=phonetic)
    pieces = value.split("=") if vr == "PN" else [value]
    if any(len(piece) > limit for piece in pieces):
        raise WorklistError(f"{label}: at most {limit} characters (DICOM {vr}), got {len(value)}")
    if "\\" in value:
        raise WorklistError(f"{label}: a backslash is not allowed (DICOM uses it to separate values)")
    if any(ord(c) < 32 for c in value):
        raise WorklistError(f"{label}: control characters (line breaks, tabs) are not allowed")
    if vr in ("CS", "AE", "UI") and not value.isascii():
        raise WorklistError(f"{label}: only ASCII characters are allowed (DICOM {vr})")
    if vr == "UI" and not all(part.isdigit() and (part == "0" or not part.startswith("0"))
                              for part in value.split(".")):
        raise WorklistError(f"{label}: not a valid UID (digits separated by dots, no leading zeros)")
    if vr == "CS" and not all(c.isupper() or c.isdigit() or c in " _" for c in value):
        raise WorklistError(f"{label}: only capital letters, digits, space and underscore are allowed (DICOM CS)")


class Worklist:
    def __init__(self, index: Index, case_sensitive_names: bool = False):
        self.index = index
        self.case_sensitive_names = case_sensitive_names

    def add(self, *, patient_name: str, patient_id: str, scheduled_date: str, modality: str,
            scheduled_time: str = "", station_ae: str = "", accession: str = "", **others: Any) -> WorklistItem:
        if not patient_id.strip() or not modality.strip() or not scheduled_date.strip():
            raise WorklistError("a worklist entry needs a patient ID, a modality and a scheduled date")
        values = _clean(dict(patient_name=patient_name, patient_id=patient_id, scheduled_date=scheduled_date,
                             modality=modality, scheduled_time=scheduled_time, station_ae=station_ae,
                             accession=accession, **others))
        values.setdefault("study_uid", "")
        values["study_uid"] = values["study_uid"] or generate_uid()
        values.setdefault("status", "SCHEDULED")
        return self.index.writer.run(lambda: WorklistItem.create(**values))

    def get(self, item_id: int) -> WorklistItem | None:
        return WorklistItem.get_or_none(WorklistItem.id == int(item_id))

    def require(self, item_id: int) -> WorklistItem:
        item = self.get(item_id)
        if item is None:
            raise WorklistError(f"no worklist entry {item_id}")
        return item

    def list(self, *, date: str = "", station_ae: str = "", modality: str = "", status: str = "",
             patient_id: str = "") -> list[WorklistItem]:
        """Entries for the CLI and the web UI; every argument uses DICOM matching (``20260101-``, ``CT\\MR``)."""
        criteria = {"ScheduledProcedureStepStartDate": date, "ScheduledStationAETitle": station_ae,
                    "Modality": modality, "ScheduledProcedureStepStatus": status, "PatientID": patient_id}
        return self.search(criteria, open_only=False)

    def search(self, criteria: Mapping[str, str], open_only: bool = True) -> list[WorklistItem]:
        query = WorklistItem.select()
        for keyword, value in criteria.items():
            attr = ATTRS.get(keyword) or STEP_ATTRS.get(keyword)
            value = "" if value is None else str(value).strip()
            if attr is None or not value or value == "*":
                continue
            field = attr.field
            if attr.kind == PN and field is W.patient_name and not self.case_sensitive_names:
                attr, value = Attr(attr.level, W.patient_name_upper, TEXT, attr.tag), value.upper()
            query = query.where(_condition(attr, value, self.case_sensitive_names, False))
        if open_only and not str(criteria.get("ScheduledProcedureStepStatus") or "").strip():
            query = query.where(W.status.in_(OPEN_STATUSES))
        return list(query.order_by(W.scheduled_date, W.scheduled_time, W.id))

    def update(self, item_id: int, **changes: Any) -> WorklistItem:
        values = _clean(changes)
        item = self.require(item_id)

        def write():
            values["updated_at"] = utcnow()
            WorklistItem.update(**values).where(WorklistItem.id == item.id).execute()
            return WorklistItem.get_by_id(item.id)

        return self.index.writer.run(write)

    def remove(self, item_id: int) -> None:
        item = self.require(item_id)
        self.index.writer.run(lambda: WorklistItem.delete().where(WorklistItem.id == item.id).execute())

    def expire(self, days: int, today: datetime.date | None = None) -> int:
        """Remove entries scheduled more than ``days`` days before ``today``; return how many."""
        today = today or datetime.date.today()
        cutoff = (today - datetime.timedelta(days=days)).strftime("%Y%m%d")
        return self.index.writer.run(
            lambda: WorklistItem.delete().where(WorklistItem.scheduled_date < cutoff).execute())

    def performed_steps(self, item: WorklistItem) -> list[PerformedStep]:
        return list(PerformedStep.select().where(PerformedStep.worklist_item == item).order_by(PerformedStep.id))


def as_dict(item: WorklistItem) -> dict[str, Any]:
    return {name: getattr(item, name) for name in ("id", *FIELDS)}


def to_json(item: WorklistItem) -> str:
    return json.dumps(as_dict(item))
