"""Index models for the backup area (see models/__init__.py and appliance/backup/).

``BackupObject`` is the local record of what is offsite: one row per archive
object per target, written as soon as the object's upload has completed, and
stamped ``manifest_at`` once a manifest listing it is on the target (only then
does ``is_offsite`` say yes: a restore needs the manifest, not just the bytes).
``deleted_at`` is set when the object has left the box; the offsite copy is
kept until ``retention_days`` later.

``BackupRun`` is the persistent history shown by ``backup status``, the
dashboard and /metrics.
"""
from peewee import BigIntegerField, CharField, DateTimeField, IntegerField, TextField

from .core import BaseModel, utcnow


class BackupObject(BaseModel):
    target = CharField()  # the target URL without credentials
    object_id = CharField()
    size = BigIntegerField()  # sealed bytes, as stored offsite
    uploaded_at = DateTimeField(default=utcnow)
    manifest_at = DateTimeField(null=True)
    deleted_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("target", "object_id"), True),)


class BackupRun(BaseModel):
    target = CharField()
    trigger = CharField(default="schedule")  # "schedule", "manual", "retry"
    started_at = DateTimeField(default=utcnow)
    finished_at = DateTimeField(null=True)
    result = CharField(default="running")  # "running", "success", "failed"
    objects = IntegerField(default=0)  # objects uploaded in this run
    bytes = BigIntegerField(default=0)  # bytes uploaded in this run (objects, snapshot, manifest)
    manifest = CharField(default="")  # name of the manifest this run wrote
    error = TextField(default="")
