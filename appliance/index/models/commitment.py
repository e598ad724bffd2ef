"""Index models for storage commitment (see models/__init__.py, dicom/commitment.py)."""
from __future__ import annotations

from peewee import CharField, DateTimeField, IntegerField, TextField

from .core import BaseModel, utcnow


class CommitmentRequest(BaseModel):
    """One Storage Commitment N-ACTION, kept until its N-EVENT-REPORT was delivered.

    ``state`` is pending -> delivered; a pending request is reported again, with back-off,
    across restarts, until the requester takes the report.
    """

    transaction_uid = CharField(unique=True)
    calling_ae = CharField()  # the requester, called back on a new association
    references = TextField()  # JSON list of [SOP Class UID, SOP Instance UID]
    state = CharField(default="pending", index=True)
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(default=utcnow, index=True)
    last_error = CharField(default="")
    created_at = DateTimeField(default=utcnow)
    delivered_at = DateTimeField(null=True)
