"""What the index keeps of one instance, as plain records: no database, no peewee.

The ingest path fills them (ingest/dicomfile.py parses an object into ``InstanceAttributes``) and
index/records.py writes and reads them. They live outside appliance/index so that an ingest worker
(dicom/workers.py), which parses and seals objects but never opens the index, imports none of it
(peewee, SQLCipher: ~14 MB a worker; bench/README.md, "Session 7: ingest workers").
"""
from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field


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
    HELD = "held"  # a different object naming another patient: kept aside (ReplacedObject, held) for an admin


@dataclass(frozen=True)
class StoredInstance:
    """One instance row as the index holds it."""

    id: int
    series_id: int
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax: str
    rows: int | None
    columns: int | None
    frames: int | None
    content_date: str
    content_time: str
    object_id: str  # archive object holding the bytes
    size: int
    sha256: str
    source: str  # how it came in, e.g. "dicom:CT1@10.0.0.5", "import", "stow:alice"
    received_at: datetime.datetime


@dataclass(frozen=True)
class PriorVersion:
    """The indexed instance a different object arrives for (what a replacement policy decides on)."""

    sop_uid: str
    patient_key: str  # "<PatientID>\x1f<Issuer>" of the patient it is filed under
    patient_id: str
    study_uid: str
    source: str
