"""An anonymized copy of a study for teaching or a second opinion: DICOM PS3.15 Annex E, the Basic
Application Level Confidentiality Profile, applied to copies as they leave; the archive is untouched.

What is done to each object (and, recursively, to every sequence item), by the profile's action codes
(PS3.15 Table E.1-1):

- X, remove: every attribute in ``REMOVE`` and every private attribute (the profile removes them unless
  a Retain Safe Private option is used, which this box does not);
- Z/D, replace: Patient's Name and ID by a pseudonym, the same for every object of one export
  (``ANON^<code>`` / ``ANON-<code>``) and different in each export; the dates and numbers in ``EMPTY``
  by empty values;
- U, replace UIDs: every UID that is not a well-known one (SOP classes, transfer syntaxes, coding
  schemes: pydicom's UID dictionary) is replaced by a new ``2.25.`` UID derived from it with a secret
  drawn for this export: consistent within the export (references between objects still match),
  unlinkable across exports;
- then Patient Identity Removed = YES, De-identification Method and its code (DCM 113100, Basic
  Application Confidentiality Profile), and Longitudinal Temporal Information Modified = REMOVED.

Burnt-in annotation: the profile asks for the pixel data to be cleaned when patient data is burnt in,
which software cannot promise. Ultrasound (and secondary capture) images usually carry the patient's
name in the pixels, so such objects are *flagged*: Burned In Annotation is set to YES unless the
object says NO, and the export's ``warnings`` say how many images need a look before they are shared.
"""
from __future__ import annotations

import hashlib
import io
import secrets
from dataclasses import dataclass, field

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

# PS3.15 Table E.1-1, action X (or X/Z, X/D, X/Z/D resolved to X): removed.
REMOVE = (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "StationName", "DeviceSerialNumber",
    "StudyComments", "RequestingPhysician", "RequestingService", "RequestedProcedureDescription",
    "ReferencedPatientSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "RequestAttributesSequence", "IssuerOfPatientID", "PatientBirthTime", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientAge", "PatientSize",
    "PatientWeight", "PatientAddress", "PatientMotherBirthName", "MilitaryRank", "BranchOfService",
    "MedicalRecordLocator", "PatientTelephoneNumbers", "EthnicGroup", "Occupation", "AdditionalPatientHistory",
    "PatientComments", "CountryOfResidence", "RegionOfResidence", "PatientInsurancePlanCodeSequence",
    "PatientReligiousPreference", "SmokingStatus", "PregnancyStatus", "LastMenstrualDate",
    "MedicalAlerts", "Allergies", "ResponsiblePerson", "ResponsibleOrganization", "ProtocolName",
    "AcquisitionComments", "ImageComments", "DerivationDescription", "PerformedProcedureStepID",
    "PerformedProcedureStepDescription", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID", "RequestedProcedureID",
    "ContentCreatorName", "TextComments", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime",
    "AcquisitionDateTime", "OverlayDate", "OverlayTime", "CurveDate", "CurveTime", "InstanceCreationDate",
    "InstanceCreationTime", "InstanceCreatorUID", "StudyIDIssuer", "ReasonForStudy", "ReasonForTheRequestedProcedure",
    "OriginalAttributesSequence", "DigitalSignaturesSequence", "ModifiedAttributesSequence",
)
# Action Z (or Z/D): kept, but empty (type 2 attributes must stay present).
EMPTY = ("AccessionNumber", "StudyID", "ReferringPhysicianName", "StudyDate", "StudyTime", "PatientBirthDate",
         "PatientSex", "ContentDate", "ContentTime")
# Well-known UIDs stay (PS3.15 U applies to instance UIDs, not to SOP classes or transfer syntaxes).
_KEEP_UID_KEYWORDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
                      "ImplementationClassUID", "AffectedSOPClassUID", "RequestedSOPClassUID",
                      "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "PrivateInformationCreatorUID"}
_SHOWS_BURNT_IN = {"US", "IVUS", "OT", "SC", "XC", "ES"}


@dataclass
class Export:
    """The state of one anonymized export: its secret, pseudonyms and what needs a human look."""

    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    patients: dict = field(default_factory=dict)  # original patient ID -> pseudonym code
    burnt_in: int = 0  # objects flagged for burnt-in annotation
    objects: int = 0

    def code(self, patient_id: str) -> str:
        if patient_id not in self.patients:
            self.patients[patient_id] = f"{len(self.patients) + 1:03d}" + hashlib.sha256(
                self.secret + b"pid" + patient_id.encode()).hexdigest()[:6].upper()
        return self.patients[patient_id]

    def uid(self, original: str) -> str:
        digest = hashlib.sha256(self.secret + b"uid" + original.encode()).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    @property
    def warnings(self) -> list[str]:
        if not self.burnt_in:
            return []
        return [f"{self.burnt_in} image(s) are ultrasound or screen captures, which usually show the patient's "
                "name or dates burnt into the pixels: the profile removes header data only, so look at each of "
                "these images before sharing them"]


def _scrub(ds: Dataset, export: Export) -> None:
    ds.remove_private_tags()
    for keyword in REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in EMPTY:
        if keyword in ds:
            ds[keyword].value = ""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                _scrub(item, export)
        elif elem.VR == "UI" and elem.value and keyword_for_tag(elem.tag) not in _KEEP_UID_KEYWORDS:
            values = elem.value if isinstance(elem.value, (list, pydicom.multival.MultiValue)) else [elem.value]
            mapped = [v if str(v) in UID_dictionary else export.uid(str(v)) for v in values]
            elem.value = mapped if len(mapped) > 1 else mapped[0]


def anonymize(data: bytes, export: Export) -> bytes:
    """One Part 10 object, de-identified by the basic profile (see the module docstring)."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    code = export.code(str(ds.get("PatientID", "")))
    modality = str(ds.get("Modality", "")).upper()
    _scrub(ds, export)
    ds.PatientName = f"ANON^{code}"
    ds.PatientID = f"ANON-{code}"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 E.1 Basic Application Level Confidentiality Profile"
    method = Dataset()
    method.CodeValue, method.CodingSchemeDesignator = "113100", "DCM"
    method.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [method]
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    if modality in _SHOWS_BURNT_IN and str(ds.get("BurnedInAnnotation", "")).upper() != "NO":
        ds.BurnedInAnnotation = "YES"
        export.burnt_in += 1
    fm = ds.file_meta
    fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    export.objects += 1
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are taken as they come (a ZIP streamed without a temp file)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class AnonymizedCopies:
    """Anonymized exports of a study, audited. Parts passed in: index, archive, audit."""

    def __init__(self, index, archive, audit):
        self.index = index
        self.archive = archive
        self.audit = audit

    def prepare(self, study_uid: str, actor: str, reason: str, address: str = "", destination: str = "download"):
        """Check and audit an export; return (objects, Export, warnings) for ``zip`` or a sender."""
        from ..errors import NotFound
        from ..index.corrections import series_modalities, study_objects
        from .edit import CorrectionError

        reason = (reason or "").strip()
        if not reason:
            raise CorrectionError("a reason is required for an anonymized copy (teaching, second opinion, ...)")
        objects = study_objects(self.index.db, study_uid)
        if not objects:
            raise NotFound(f"no study {study_uid} in the archive")
        export = Export()
        code = export.code(objects[0].patient_id)
        flagged = sum(n for m, n in series_modalities(self.index.db, study_uid).items() if m in _SHOWS_BURNT_IN)
        warnings = Export(burnt_in=flagged).warnings
        self.audit.record("study.export.anonymized", actor, address=address, patient_id=objects[0].patient_id,
                          study_uid=study_uid,
                          detail=f"reason: {reason}; {len(objects)} instance(s) to {destination}, basic profile "
                                 f"(PS3.15 E.1), pseudonym ANON-{code}; {flagged} image(s) flagged for burnt-in "
                                 "annotation")
        return objects, export, warnings

    def stream_zip(self, objects, export: Export):
        """Yield a ZIP of the anonymized objects, one in memory at a time; names carry no patient data."""
        import zipfile

        sink = _Sink()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for n, o in enumerate(objects, 1):
                zf.writestr(f"ANON-{export.code(o.patient_id)}/{n:05d}.dcm",
                            anonymize(self.archive.read(o.object_id), export))
                yield sink.take()
        yield sink.take()

    def send(self, study_uid: str, peer_ae: str, peers, our_ae: str, actor: str, reason: str, address: str = "",
             timeout: float = 30.0) -> tuple[int, list[str], list[str]]:
        """Send an anonymized copy to a registered peer; returns (sent, failures, warnings)."""
        from ..dicom.send_copies import send_copies
        from ..errors import NotFound
        from ..index.corrections import study_syntaxes

        peer = peers.get(peer_ae)
        if peer is None or not peer.can_receive_moves:
            raise NotFound(f"{peer_ae} is not a registered peer allowed to receive images "
                           "(`pacs-appliance modality list`)")
        objects, export, warnings = self.prepare(study_uid, actor, reason, address, destination=f"peer {peer_ae}")
        blobs = (anonymize(self.archive.read(o.object_id), export) for o in objects)
        sent, failed = send_copies(our_ae, peer, peers.tls_args(peer), study_syntaxes(self.index.db, study_uid),
                                   blobs, timeout)
        self.audit.record("study.export.anonymized.sent", actor, address=address, study_uid=study_uid,
                          patient_id=objects[0].patient_id,
                          detail=f"{sent} of {len(objects)} anonymized instance(s) sent to {peer_ae}"
                                 + (f"; not sent: {failed[0]}" if failed else ""))
        return sent, failed, warnings
