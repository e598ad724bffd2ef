"""Index models for storage recycling (appliance/services/recycle.py).

A recycled study's index rows are gone (C-FIND and the study list no longer
show it), but the box remembers it here: which objects it had, how big they
were offsite, and that their only copy is now on the backup target. These rows
are what keeps the backup from ever expiring those objects offsite
(index/snapshot.py lists them as wanted), what ``pacs-appliance storage
restore`` reads to bring a study back, and the intent log that makes deletion
crash-safe: ``purged_at`` is NULL while the object's file may still be on the
local disk, and start-up finishes such deletions before reconciliation runs.
"""
from peewee import BigIntegerField, BooleanField, CharField, DateTimeField, ForeignKeyField, IntegerField

from .core import BaseModel, utcnow


class RecycledStudy(BaseModel):
    study_uid = CharField(index=True)  # not unique: a study can be recycled, restored, recycled again
    patient_id = CharField(default="")
    patient_name = CharField(default="")
    study_date = CharField(default="")
    accession = CharField(default="")
    description = CharField(default="")
    modalities = CharField(default="\\")
    num_instances = IntegerField(default=0)
    bytes = BigIntegerField(default=0)  # sealed bytes freed on the local disk
    target = CharField()  # the backup target that holds the only copy
    reason = CharField(default="")
    recycled_at = DateTimeField(default=utcnow, index=True)
    restored_at = DateTimeField(null=True)


class RecycledObject(BaseModel):
    study = ForeignKeyField(RecycledStudy, backref="objects", on_delete="CASCADE")
    object_id = CharField(unique=True)
    sop_uid = CharField()
    size = BigIntegerField()  # plaintext bytes, as Instance.size
    sha256 = CharField()
    offsite_size = BigIntegerField()  # sealed bytes, as stored offsite (BackupObject.size)
    source = CharField(default="")
    replaced = BooleanField(default=False)  # a ReplacedObject (older version), not the current instance
    purged_at = DateTimeField(null=True)  # NULL: the local file may still exist (deletion pending)
