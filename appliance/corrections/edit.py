"""Correcting a study: its patient and study attributes, moving it to another patient, merging two
patient records, moving or splitting a series.

Every operation is the same mechanism: read each current object of the study (or series) from the
archive, write a corrected copy with pydicom, and hand the copies to ``Ingestor.store_corrected``,
which seals them all and swaps the index rows in one transaction. The stored originals are never
altered: each becomes a replaced version (``pacs-appliance storage versions`` lists and restores
it), kept and backed up like any other object.

UIDs are kept (the decision, after IHE's Patient Information Reconciliation, which updates the
patient of stored images under their UIDs): a correction fixes labels on the same acquisition, so
reports, key images and viewers that cite the UIDs stay right, and a peer that receives the
corrected copy (forwarding rules resend it, queued in the same transaction) replaces its wrong copy
rather than keeping both. IOCM's new-UID route suits a modality rejecting its own images, not an
archive relabelling them; Orthanc's modify without ``Keep`` would leave peers with a duplicate
study under the wrong patient. A peer that refuses a patient change under a known UID (as this box
does by default, 0xC771) must be corrected there too; the audit entry says what changed.

Each corrected object records what it replaced in an Original Attributes Sequence (0400,0561;
PS3.3 C.12.1) with reason CORRECT, so the history travels with the object.
"""
from __future__ import annotations

import copy
import datetime
import io
import logging
import re
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..errors import ApplianceError, NotFound
from ..index.corrections import CurrentObject, patient_studies, series_objects, study_objects, study_summary
from ..ingest import Origin

log = logging.getLogger(__name__)

# What a user may correct, with its VR and maximum length (PS3.5 6.2).
EDITABLE = {
    "PatientName": ("PN", 64),
    "PatientID": ("LO", 64),
    "PatientBirthDate": ("DA", 8),
    "PatientSex": ("CS", 16),
    "AccessionNumber": ("SH", 16),
    "StudyDescription": ("LO", 64),
    "ReferringPhysicianName": ("PN", 64),
}
PATIENT_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYS = ("AccessionNumber", "StudyDescription", "ReferringPhysicianName", "StudyDate", "StudyTime",
              "StudyID")
MODIFYING_SYSTEM = "PACS Appliance"


class CorrectionError(ApplianceError):
    http_status = 400


@dataclass(frozen=True)
class CorrectionResult:
    action: str
    study_uids: tuple[str, ...]
    instances: int
    before: dict
    after: dict


def validate(changes: dict) -> dict:
    """Check and normalise user-entered values; raise CorrectionError saying which one is wrong."""
    clean = {}
    for key, value in changes.items():
        if key not in EDITABLE:
            raise CorrectionError(f"{key} cannot be corrected here; choose from {', '.join(EDITABLE)}")
        vr, limit = EDITABLE[key]
        value = (value or "").strip()
        if "\\" in value or any(ord(c) < 32 for c in value):
            raise CorrectionError(f"{key}: backslashes and control characters are not allowed")
        if vr == "DA":
            value = value.replace("-", "")
        if len(value) > limit and vr != "DA":
            raise CorrectionError(f"{key}: at most {limit} characters (DICOM {vr})")
        if vr == "DA" and value:
            try:
                datetime.datetime.strptime(value, "%Y%m%d")
                if len(value) != 8:
                    raise ValueError(value)
            except ValueError:
                raise CorrectionError(f"{key}: a date as YYYY-MM-DD or YYYYMMDD, not {value!r}") from None
        if key == "PatientSex":
            value = value.upper()
            if value not in ("", "M", "F", "O"):
                raise CorrectionError("PatientSex: M, F, O or empty")
        if key == "PatientID" and not value:
            raise CorrectionError("PatientID cannot be empty")
        if vr == "PN" and not re.fullmatch(r"[^=]*(=[^=]*){0,2}", value):
            raise CorrectionError(f"{key}: a person name has at most three '='-separated groups")
        clean[key] = value
    return clean


def rewrite(data: bytes, changes: dict, reason: str, now: datetime.datetime) -> bytes:
    """A copy of one Part 10 object with ``changes`` applied and the old values kept in an Original
    Attributes Sequence item. Pixel data and every other element are written back unchanged."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    old = Dataset()
    for key, value in changes.items():
        if key in ds:
            old.add(copy.deepcopy(ds[key]))
        elif not value:
            continue
        if key in ds:
            ds[key].value = value
        else:
            setattr(ds, key, value)
    if len(old) or changes:
        item = Dataset()
        item.ModifiedAttributesSequence = [old]
        item.AttributeModificationDateTime = now.strftime("%Y%m%d%H%M%S")
        item.ModifyingSystem = MODIFYING_SYSTEM
        item.SourceOfPreviousValues = ""
        item.ReasonForTheAttributeModification = "CORRECT"  # a defined term; the free-text reason is audited
        seq = list(ds.get("OriginalAttributesSequence", []))
        seq.append(item)
        ds.OriginalAttributesSequence = seq
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class Corrections:
    """The operations, with their audit entries. Parts passed in: index, archive, ingestor, audit."""

    def __init__(self, index, archive, ingestor, audit):
        self.index = index
        self.archive = archive
        self.ingestor = ingestor
        self.audit = audit

    # -- the one mechanism -------------------------------------------------
    def _apply(self, objects: list[CurrentObject], changes: dict, actor: str, reason: str) -> int:
        if not objects:
            raise NotFound("nothing to correct: the study or series has no images (was it deleted?)")
        now = datetime.datetime.now(datetime.timezone.utc)

        def corrected(o: CurrentObject) -> bytes:
            return rewrite(self.archive.read(o.object_id), changes, reason, now)

        results = self.ingestor.store_corrected(objects, corrected, Origin("correction", actor))
        return len(results)

    @staticmethod
    def _reason(reason: str) -> str:
        reason = (reason or "").strip()
        if not reason:
            raise CorrectionError("a reason is required (it goes into the audit log)")
        return reason

    def _summary(self, study_uid: str) -> dict:
        s = study_summary(self.index.db, study_uid)
        if s is None:
            raise NotFound(f"no study {study_uid} in the archive")
        return s

    def _audit(self, action: str, actor: str, address: str, study_uid: str, before: dict, after: dict,
               reason: str, extra: str = "") -> None:
        changed = [f"{k}: {before.get(k, '')!r} -> {v!r}" for k, v in after.items() if before.get(k, "") != v]
        self.audit.record(action, actor, address=address, patient_id=after.get("PatientID") or before.get(
            "PatientID", ""), study_uid=study_uid,
            detail="; ".join([f"reason: {reason}"] + ([extra] if extra else []) + (changed or ["no values changed"])))

    # -- operations --------------------------------------------------------
    def edit_study(self, study_uid: str, changes: dict, actor: str, reason: str, address: str = "",
                   action: str = "study.correct") -> CorrectionResult:
        """Correct patient and study attributes of one study (every image of it)."""
        reason = self._reason(reason)
        changes = validate(changes)
        before = self._summary(study_uid)
        changes = {k: v for k, v in changes.items() if before.get(k, "") != v}
        if not changes:
            raise CorrectionError("nothing to change: the values given are the ones stored")
        n = self._apply(study_objects(self.index.db, study_uid), changes, actor, reason)
        self._audit(action, actor, address, study_uid, before, changes, reason, f"{n} instance(s)")
        return CorrectionResult(action, (study_uid,), n, before, changes)

    def patient_of(self, patient_id: str, issuer: str = "") -> dict:
        studies = patient_studies(self.index.db, patient_id, issuer)
        if not studies:
            raise NotFound(f"no patient with ID {patient_id!r} in the archive")
        s = self._summary(studies[0])
        return {k: s[k] for k in PATIENT_KEYS}

    def move_study(self, study_uid: str, to_patient_id: str, actor: str, reason: str, address: str = "",
                   issuer: str = "") -> CorrectionResult:
        """File a study under another, existing patient (the wrong-patient fix): the target patient's
        name, ID, birth date and sex are written into every image."""
        target = self.patient_of(to_patient_id, issuer)
        return self.edit_study(study_uid, target, actor, reason, address, action="study.move")

    def merge_patients(self, from_patient_id: str, into_patient_id: str, actor: str, reason: str,
                       address: str = "") -> list[CorrectionResult]:
        """Two records of the same person: every study of ``from`` moves to ``into``, one study (one
        transaction) at a time; a study already moved stays moved if a later one fails."""
        reason = self._reason(reason)
        if from_patient_id == into_patient_id:
            raise CorrectionError("merge a patient into another one, not into itself")
        target = self.patient_of(into_patient_id)
        studies = patient_studies(self.index.db, from_patient_id)
        if not studies:
            raise NotFound(f"no patient with ID {from_patient_id!r} in the archive")
        results = [self.edit_study(uid, target, actor, reason, address, action="patient.merge") for uid in studies]
        return results

    def apply_worklist(self, study_uid: str, item, actor: str, reason: str, address: str = "") -> CorrectionResult:
        """A study that arrived without a worklist entry (an ultrasound machine with no worklist, a typed
        patient): the scheduled step's patient, accession, procedure and referring physician are written
        in as a correction. ``item`` is a worklist entry (appliance/records/worklist.py). The study keeps its UIDs."""
        values = {"PatientName": item.patient_name, "PatientID": item.patient_id,
                  "PatientBirthDate": item.birth_date, "PatientSex": item.sex, "AccessionNumber": item.accession,
                  "StudyDescription": item.requested_procedure_description or item.step_description,
                  "ReferringPhysicianName": item.referring_physician}
        before = self._summary(study_uid)
        changes = {k: v for k, v in values.items() if v or k in ("AccessionNumber",)}
        if not any(before.get(k, "") != v for k, v in validate(changes).items()):
            raise CorrectionError("the study already carries this worklist entry's values")
        return self.edit_study(study_uid, changes, actor, reason, address, action="study.worklist")

    def move_series(self, series_uid: str, to_study_uid: str | None, actor: str, reason: str,
                    address: str = "") -> CorrectionResult:
        """Move a series into another study (with that study's patient and study attributes), or, with
        ``to_study_uid`` None, split it off into a new study of its own (same patient) - a series
        sent under the wrong study."""
        reason = self._reason(reason)
        objects = series_objects(self.index.db, series_uid)
        if not objects:
            raise NotFound(f"no series {series_uid} in the archive")
        from_study = objects[0].study_uid
        before = self._summary(from_study)
        if to_study_uid == from_study:
            raise CorrectionError("the series is already in that study")
        if to_study_uid:
            target = self._summary(to_study_uid)
            action = "series.move"
        else:
            target, to_study_uid, action = dict(before), generate_uid(), "series.split"
        changes = {k: target[k] for k in PATIENT_KEYS + STUDY_KEYS}
        changes["StudyInstanceUID"] = to_study_uid
        n = self._apply(objects, changes, actor, reason)
        before = dict(before, StudyInstanceUID=from_study)
        self._audit(action, actor, address, to_study_uid, before, changes, reason,
                    f"series {series_uid}, {n} instance(s), from study {from_study}")
        return CorrectionResult(action, (from_study, to_study_uid), n, before, changes)
