"""Writing index rows for one instance: run inside the writer's transaction.

The counts that C-FIND reports are maintained here, incrementally, so that a
query never aggregates over the instance table.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from ..errors import ConflictRejected
from .models import Instance, Patient, ReplacedObject, Series, Study, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceAttributes:
    """What the index keeps of one instance, as plain strings and numbers."""

    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    study_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    study_description: str
    referring_physician: str
    patient_age: str
    institution: str
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    series_date: str
    series_time: str
    station_name: str
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax: str
    rows: int | None
    columns: int | None
    frames: int | None
    content_date: str
    content_time: str
    extra: dict = field(default_factory=dict)


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # identical bytes already indexed
    REPLACED = "replaced"  # a different object held this UID; it was kept as a ReplacedObject


def _add_value(multi: str, value: str) -> str:
    if not value or f"\\{value}\\" in multi:
        return multi
    items = sorted([v for v in multi.split("\\") if v] + [value])
    return "\\" + "\\".join(items) + "\\"


def find_instance(sop_uid: str) -> Instance | None:
    return Instance.get_or_none(Instance.sop_uid == sop_uid)


def record_instance(a: InstanceAttributes, object_id: str, size: int, sha256: str, source: str,
                    on_conflict: str = "replace") -> Outcome:
    """Index one stored object. Call inside a transaction (the writer does)."""
    outcome = Outcome.STORED
    existing = find_instance(a.sop_uid)
    if existing is not None:
        if existing.sha256 == sha256:
            return Outcome.DUPLICATE
        if on_conflict == "reject":
            raise ConflictRejected(
                f"a different object with SOP Instance UID {a.sop_uid} is already stored; "
                "the archive is set to reject such replacements"
            )
        ReplacedObject.create(sop_uid=existing.sop_uid, object_id=existing.object_id, size=existing.size,
                              sha256=existing.sha256, source=existing.source)
        remove_instance(existing)
        outcome = Outcome.REPLACED

    now = utcnow()
    patient_key = f"{a.patient_id}\x1f{a.issuer}"
    # An existing series or study keeps its place in the hierarchy: an instance that names
    # another study or patient (a corrected ID, a typo at the modality) is filed with it, so
    # counts add up and no empty patient or study rows appear. The bytes keep what was sent.
    # One joined query each (not one per foreign key): this runs for every stored instance.
    series = (Series.select(Series, Study, Patient).join(Study).join(Patient)
              .where(Series.series_uid == a.series_uid).first())
    study = series.study if series is not None else (
        Study.select(Study, Patient).join(Patient).where(Study.study_uid == a.study_uid).first())
    if study is not None and study.patient.patient_key != patient_key:
        log.warning("instance %s names another patient than its stored study %s; filed with the study",
                    a.sop_uid, study.study_uid)
        patient = study.patient
    elif study is not None:  # the study's own patient, already read by the join above
        patient = study.patient
        patient.name, patient.name_upper = a.patient_name, a.patient_name.upper()
        patient.birth_date = a.birth_date or patient.birth_date
        patient.sex = a.sex or patient.sex
    else:
        patient, _ = Patient.get_or_create(patient_key=patient_key,
                                           defaults={"patient_id": a.patient_id, "issuer": a.issuer})
        patient.name, patient.name_upper = a.patient_name, a.patient_name.upper()
        patient.birth_date = a.birth_date or patient.birth_date
        patient.sex = a.sex or patient.sex

    if study is None:
        study = Study(patient=patient, study_uid=a.study_uid)
        patient.num_studies += 1
    for attr, value in (("study_date", a.study_date), ("study_time", a.study_time), ("accession", a.accession),
                        ("study_id", a.study_id), ("description", a.study_description),
                        ("referring_physician", a.referring_physician), ("patient_age", a.patient_age),
                        ("institution", a.institution)):
        if value:
            setattr(study, attr, value)

    if study.id is None:
        study.save()
    if series is None:
        series = Series(study=study, series_uid=a.series_uid)
        study.num_series += 1
        patient.num_series += 1
    for attr, value in (("modality", a.modality), ("series_number", a.series_number),
                        ("description", a.series_description), ("body_part", a.body_part),
                        ("series_date", a.series_date), ("series_time", a.series_time),
                        ("station_name", a.station_name)):
        if value not in ("", None):
            setattr(series, attr, value)

    series.num_instances += 1
    series_study = study  # the series' own study (see above)
    series_study.num_instances += 1
    series_study.modalities = _add_value(series_study.modalities, a.modality)
    series_study.sop_classes = _add_value(series_study.sop_classes, a.sop_class_uid)
    series_study.updated_at = now
    patient.num_instances += 1
    patient.updated_at = now

    patient.save()
    series_study.save()
    series.save()
    Instance.create(
        series=series, sop_uid=a.sop_uid, sop_class_uid=a.sop_class_uid, instance_number=a.instance_number,
        transfer_syntax=a.transfer_syntax, rows=a.rows, columns=a.columns, frames=a.frames,
        content_date=a.content_date, content_time=a.content_time, object_id=object_id, size=size,
        sha256=sha256, source=source, received_at=now,
    )
    return outcome


def remove_instance(instance: Instance) -> None:
    """Delete an instance row, keep the counts right and drop emptied parents."""
    series = instance.series
    study = series.study
    patient = study.patient
    instance.delete_instance()
    series.num_instances -= 1
    study.num_instances -= 1
    patient.num_instances -= 1
    if series.num_instances <= 0:
        series.delete_instance()
        study.num_series -= 1
        patient.num_series -= 1
        study.modalities = "\\"
        for s in Series.select(Series.modality).where(Series.study == study):
            study.modalities = _add_value(study.modalities, s.modality)
    else:
        series.save()
    if study.num_instances <= 0:
        study.delete_instance()
        patient.num_studies -= 1
    else:
        study.save()
    if patient.num_instances <= 0:
        patient.delete_instance()
    else:
        patient.save()
