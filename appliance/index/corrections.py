"""Index access for corrections (appliance/corrections/): which objects a study, series or patient
holds, and swapping a whole set of instances for corrected objects in one transaction.

Reads run on any thread; ``swap_instances`` runs inside the writer's transaction, so a study of
500 images is corrected all at once or not at all (a kill -9 before the commit leaves the old
rows, and the corrected objects already sealed are unindexed orphans, which pruning removes).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ApplianceError
from ..records.instances import InstanceAttributes
from .models import ReplacedObject
from .records import lookup, record, remove_instance

_OBJECTS = (
    'SELECT i."sop_uid", i."object_id", i."sha256", i."size", i."source", se."series_uid", st."study_uid", '
    'p."patient_id", p."issuer" FROM "instance" i JOIN "series" se ON i."series_id" = se."id" '
    'JOIN "study" st ON se."study_id" = st."id" JOIN "patient" p ON st."patient_id" = p."id" ')


class CorrectionConflict(ApplianceError):
    """An instance changed while a correction was being prepared; nothing was changed."""

    http_status = 409


@dataclass(frozen=True)
class CurrentObject:
    """One current instance: what a correction reads and then displaces."""

    sop_uid: str
    object_id: str
    sha256: str
    size: int
    source: str
    series_uid: str
    study_uid: str
    patient_id: str
    issuer: str


@dataclass(frozen=True)
class NewObject:
    """A corrected object, sealed in the archive, to be indexed in place of ``replaces``."""

    attributes: InstanceAttributes
    object_id: str
    size: int
    sha256: str
    replaces: CurrentObject


def _objects(db, where: str, params) -> list[CurrentObject]:
    rows = db.execute_sql(_OBJECTS + "WHERE " + where + ' ORDER BY se."id", i."instance_number", i."id"',
                          params).fetchall()
    return [CurrentObject(*r) for r in rows]


def study_objects(db, study_uid: str) -> list[CurrentObject]:
    return _objects(db, 'st."study_uid" = ?', (study_uid,))


def series_objects(db, series_uid: str) -> list[CurrentObject]:
    return _objects(db, 'se."series_uid" = ?', (series_uid,))


def patient_studies(db, patient_id: str, issuer: str = "") -> list[str]:
    rows = db.execute_sql('SELECT st."study_uid" FROM "study" st JOIN "patient" p ON st."patient_id" = p."id" '
                          'WHERE p."patient_id" = ? AND p."issuer" = ? ORDER BY st."study_date", st."id"',
                          (patient_id, issuer)).fetchall()
    return [r[0] for r in rows]


def study_summary(db, study_uid: str) -> dict | None:
    """Patient and study attributes as the index holds them (the 'before' of an audit entry)."""
    row = db.execute_sql(
        'SELECT p."patient_id", p."issuer", p."name", p."birth_date", p."sex", st."accession", st."description", '
        'st."referring_physician", st."study_date", st."study_time", st."study_id" FROM "study" st '
        'JOIN "patient" p ON st."patient_id" = p."id" WHERE st."study_uid" = ?', (study_uid,)).fetchone()
    if row is None:
        return None
    keys = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
            "StudyDescription", "ReferringPhysicianName", "StudyDate", "StudyTime", "StudyID")
    return dict(zip(keys, row))


def swap_instances(db, new: list[NewObject], source: str) -> int:
    """Replace each ``n.replaces`` by ``n``: the old object is kept as a replaced version (restorable
    with ``storage versions``), its rows go, and the new object is indexed from its own header.
    Call inside a transaction. All old rows go first, so a study that moves to another patient is
    filed afresh under that patient rather than kept where it was (records.record keeps
    an instance with an existing study). Raises CorrectionConflict if any instance changed since
    it was read."""
    for n in new:
        old = n.replaces
        inst = lookup(db, old.sop_uid)
        if inst is None or inst.object_id != old.object_id:
            raise CorrectionConflict(f"instance {old.sop_uid} was replaced or deleted while the correction was "
                                     "prepared; nothing was changed: look at the study again and retry")
        ReplacedObject.insert(sop_uid=old.sop_uid, object_id=old.object_id, size=old.size, sha256=old.sha256,
                              source=old.source, patient_id=old.patient_id, study_uid=old.study_uid).execute(db)
        remove_instance(db, inst)
    for n in new:
        record(db, n.attributes, n.object_id, n.size, n.sha256, source, on_conflict="reject")
    return len(new)


def series_modalities(db, study_uid: str) -> dict[str, int]:
    """Modality -> number of instances, for one study."""
    rows = db.execute_sql('SELECT se."modality", count(i."id") FROM "series" se JOIN "study" st ON se."study_id" = '
                          'st."id" JOIN "instance" i ON i."series_id" = se."id" WHERE st."study_uid" = ? '
                          'GROUP BY se."modality"', (study_uid,)).fetchall()
    return {m or "": n for m, n in rows}


def study_syntaxes(db, study_uid: str) -> set[tuple[str, str]]:
    """(SOP Class UID, transfer syntax) pairs of a study's instances: the contexts to send them on."""
    rows = db.execute_sql('SELECT DISTINCT i."sop_class_uid", i."transfer_syntax" FROM "instance" i JOIN "series" se '
                          'ON i."series_id" = se."id" JOIN "study" st ON se."study_id" = st."id" '
                          'WHERE st."study_uid" = ?', (study_uid,)).fetchall()
    return {(a, b) for a, b in rows}
