"""Index models for the retrieval area: DICOM peers, worklist, MPPS, forwarding queue.

Dates are DICOM DA strings (YYYYMMDD) and times TM strings (HHMMSS), like the
core models, so the shared query engine's range matching works on them.
"""
from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, ForeignKeyField, IntegerField, TextField

from .core import BaseModel, utcnow


class Peer(BaseModel):
    """A known DICOM application entity and what it may do with this box."""

    ae_title = CharField(unique=True)
    host = CharField()
    port = IntegerField()
    description = CharField(default="")
    can_store = BooleanField(default=True)  # may send us images
    can_query = BooleanField(default=True)  # may C-FIND (and query the worklist)
    can_retrieve = BooleanField(default=True)  # may C-MOVE / C-GET from us
    can_receive_moves = BooleanField(default=True)  # may be a C-MOVE destination / forward target
    tls = BooleanField(default=False)  # we call it with DICOM TLS (port is its TLS port; migration 0006)
    cert_fingerprint = CharField(default="")  # SHA-256 of the TLS client certificate it must call with (0007)
    created_at = DateTimeField(default=utcnow)


class WorklistItem(BaseModel):
    """One scheduled procedure step (one entry in the modality worklist)."""

    patient_name = CharField(default="")
    patient_name_upper = CharField(default="")
    patient_id = CharField(default="", index=True)
    birth_date = CharField(default="")
    sex = CharField(default="")
    accession = CharField(default="", index=True)
    requested_procedure_id = CharField(default="")
    requested_procedure_description = CharField(default="")
    study_uid = CharField(unique=True)  # the Study Instance UID the modality should use
    step_id = CharField(default="")
    step_description = CharField(default="")
    station_ae = CharField(default="", index=True)
    modality = CharField(default="", index=True)
    scheduled_date = CharField(default="", index=True)
    scheduled_time = CharField(default="")
    performing_physician = CharField(default="")
    referring_physician = CharField(default="")
    # SCHEDULED, IN PROGRESS, COMPLETED, DISCONTINUED (the last MPPS state seen)
    status = CharField(default="SCHEDULED")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class PerformedStep(BaseModel):
    """A Modality Performed Procedure Step created by a modality with N-CREATE."""

    sop_uid = CharField(unique=True)
    worklist_item = ForeignKeyField(WorklistItem, null=True, backref="performed", on_delete="SET NULL")
    status = CharField()  # IN PROGRESS, COMPLETED, DISCONTINUED
    calling_ae = CharField(default="")
    study_uid = CharField(default="")
    modality = CharField(default="")
    attributes = TextField(default="")  # the last attribute list received, DICOM JSON
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class ForwardJob(BaseModel):
    """One instance to send to one peer: the durable forwarding queue.

    ``state`` is pending -> sent, or pending -> failed after the last retry; a
    sent job is never sent again.
    """

    sop_uid = CharField()
    object_id = CharField()
    destination = CharField()  # AE title of a registered peer
    state = CharField(default="pending", index=True)
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(default=utcnow, index=True)
    last_error = CharField(default="")
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("object_id", "destination"), True),)
