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

from ..errors import ApplianceError
from ..index import Index
from ..index.query import QueryError, normalize_date, normalize_time
from ..index.worklist import ATTRS, STEP_ATTRS, PerformedStep, WorklistItem  # noqa: F401 - ATTRS: dicom/worklist.py

STATUSES = ("SCHEDULED", "IN PROGRESS", "COMPLETED", "DISCONTINUED")
FIELDS = ("patient_name", "patient_id", "birth_date", "sex", "accession", "requested_procedure_id",
          "requested_procedure_description", "study_uid", "step_id", "step_description", "station_ae", "modality",
          "scheduled_date", "scheduled_time", "performing_physician", "referring_physician", "status")
# The value representation of each field and its longest value (PS3.5 6.2): a modality may refuse or cut a
# longer value, so it is refused here, where a person can fix it.
LIMITS = {
    "patient_name": ("PN", 64), "patient_id": ("LO", 64), "sex": ("CS", 16), "accession": ("SH", 16),
    "requested_procedure_id": ("SH", 16), "requested_procedure_description": ("LO", 64), "study_uid": ("UI", 64),
    "step_id": ("SH", 16), "step_description": ("LO", 64), "station_ae": ("AE", 16), "modality": ("CS", 16),
    "performing_physician": ("PN", 64), "referring_physician": ("PN", 64),
}


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
        return self.index.worklist.add(values)

    def get(self, item_id: int) -> WorklistItem | None:
        return self.index.worklist.get(int(item_id))

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
        return self.index.worklist.search(criteria, open_only=open_only,
                                          case_sensitive_names=self.case_sensitive_names)

    def update(self, item_id: int, **changes: Any) -> WorklistItem:
        values = _clean(changes)
        item = self.require(item_id)
        return self.index.worklist.update(item.id, values)

    def remove(self, item_id: int) -> None:
        item = self.require(item_id)
        self.index.worklist.remove(item.id)

    def expire(self, days: int, today: datetime.date | None = None) -> int:
        """Remove entries scheduled more than ``days`` days before ``today``; return how many."""
        today = today or datetime.date.today()
        cutoff = (today - datetime.timedelta(days=days)).strftime("%Y%m%d")
        return self.index.worklist.remove_scheduled_before(cutoff)

    def performed_steps(self, item: WorklistItem) -> list[PerformedStep]:
        return self.index.worklist.performed_steps(item.id)


def as_dict(item: WorklistItem) -> dict[str, Any]:
    return {name: getattr(item, name) for name in ("id", *FIELDS)}


def to_json(item: WorklistItem) -> str:
    return json.dumps(as_dict(item))
