"""Index models for the web area: the audit log, API tokens and web sessions.

- ``AuditEntry``: append-only; each row carries the SHA-256 of its own content
  chained to the previous row's hash (see appliance/records/audit.py), so an edited,
  inserted or deleted row breaks the chain from that point on.
- ``ApiToken``: per-user tokens for ``Authorization: Bearer``; only the SHA-256 of
  the token is stored (a token is 256 random bits, so a fast hash is enough).
- ``WebSession``: server-side browser sessions; the cookie holds a random id and
  the table only its SHA-256, so a copy of the index cannot be replayed as cookies.
"""
from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, ForeignKeyField, TextField

from .core import BaseModel, User, utcnow


class AuditEntry(BaseModel):
    at = DateTimeField(default=utcnow, index=True)
    actor = CharField(index=True)
    action = CharField(index=True)
    address = CharField(default="")
    patient_id = CharField(default="", index=True)
    study_uid = CharField(default="", index=True)
    detail = TextField(default="")
    prev_hash = CharField()
    entry_hash = CharField()


class ApiToken(BaseModel):
    user = ForeignKeyField(User, backref="api_tokens", on_delete="CASCADE")
    name = CharField(default="")
    token_hash = CharField(unique=True)
    prefix = CharField(default="")  # first characters, to tell tokens apart in lists
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)
    revoked = BooleanField(default=False)


class WebSession(BaseModel):
    sid_hash = CharField(unique=True)
    user = ForeignKeyField(User, backref="web_sessions", on_delete="CASCADE")
    address = CharField(default="")
    created_at = DateTimeField(default=utcnow)
    last_seen = DateTimeField(default=utcnow)
    expires_at = DateTimeField(index=True)  # absolute limit; idle limit is checked against last_seen
