"""The index: peewee models with no database bound (repositories execute against their own; repository.py).

Patient -> Study -> Series -> Instance mirrors the DICOM information model. The
counts C-FIND reports (NumberOfStudyRelatedInstances, ModalitiesInStudy, ...)
are kept up to date by ingest in the same transaction, so queries never
aggregate over instances.

Dates are stored as DICOM DA strings (YYYYMMDD) and times as TM strings
normalised to at least HHMMSS, so range matching is a string comparison.
Multi-valued attributes (ModalitiesInStudy, SOPClassesInStudy) are stored as
``\\A\\B\\`` so one value matches with LIKE '%\\A\\%'.

The schema itself is created and changed only by the numbered scripts in
migrations/; a model change here needs a migration there.
"""
from __future__ import annotations

import datetime

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        legacy_table_names = False


class Patient(BaseModel):
    # PatientID alone does not identify a patient across issuers.
    patient_key = CharField(unique=True)  # "<PatientID>\x1f<IssuerOfPatientID>"
    patient_id = CharField(default="", index=True)
    issuer = CharField(default="")
    name = CharField(default="")
    name_upper = CharField(default="", index=True)  # for case-insensitive matching
    birth_date = CharField(default="")
    sex = CharField(default="")
    num_studies = IntegerField(default=0)
    num_series = IntegerField(default=0)
    num_instances = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Study(BaseModel):
    patient = ForeignKeyField(Patient, backref="studies", on_delete="CASCADE")
    study_uid = CharField(unique=True)
    study_date = CharField(default="", index=True)
    study_time = CharField(default="")
    accession = CharField(default="", index=True)
    study_id = CharField(default="")
    description = CharField(default="")
    referring_physician = CharField(default="")
    patient_age = CharField(default="")
    institution = CharField(default="")
    modalities = CharField(default="\\")  # "\CT\MR\"
    sop_classes = TextField(default="\\")
    num_series = IntegerField(default=0)
    num_instances = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow, index=True)


class Series(BaseModel):
    study = ForeignKeyField(Study, backref="series", on_delete="CASCADE")
    series_uid = CharField(unique=True)
    modality = CharField(default="", index=True)
    series_number = IntegerField(null=True)
    description = CharField(default="")
    body_part = CharField(default="")
    series_date = CharField(default="")
    series_time = CharField(default="")
    station_name = CharField(default="")
    num_instances = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)


class Instance(BaseModel):
    series = ForeignKeyField(Series, backref="instances", on_delete="CASCADE")
    sop_uid = CharField(unique=True)
    sop_class_uid = CharField(default="")
    instance_number = IntegerField(null=True)
    transfer_syntax = CharField(default="")
    rows = IntegerField(null=True)
    columns = IntegerField(null=True)
    frames = IntegerField(null=True)
    content_date = CharField(default="")
    content_time = CharField(default="")
    object_id = CharField(unique=True)  # archive object holding the bytes
    size = IntegerField()
    sha256 = CharField()
    source = CharField(default="")  # how it came in, e.g. "dicom:CT1@10.0.0.5", "import", "stow:alice"
    received_at = DateTimeField(default=utcnow, index=True)


class ReplacedObject(BaseModel):
    """Another version of an instance: one displaced by a newer object under the same SOP Instance
    UID, or (``held``) a newcomer naming another patient, kept aside for an admin (migration 0009).

    Kept (not deleted), so a replacement can be undone (``pacs-appliance storage versions``).
    """

    sop_uid = CharField(index=True)
    object_id = CharField(unique=True)
    size = IntegerField()
    sha256 = CharField()
    source = CharField(default="")
    replaced_at = DateTimeField(default=utcnow)
    patient_id = CharField(default="")  # of this version ('' if replaced before migration 0009)
    study_uid = CharField(default="")
    held = BooleanField(default=False)


class User(BaseModel):
    username = CharField(unique=True)
    password_hash = CharField()
    role = CharField()  # see appliance.records.accounts.ROLES
    disabled = BooleanField(default=False)
    created_at = DateTimeField(default=utcnow)



