"""Index model for the recycle bin (appliance/corrections/delete.py; migration 0012).

A deleted study, series or instance loses its index rows at once (gone from C-FIND,
QIDO, the study list and every retrieval) but its objects stay in the archive, one
``binned_object`` row each, until ``purge_after``: restorable until then. These rows keep
the objects in the backup's wanted list and out of reconciliation's orphans; once
purged (the local file deleted, ``purged_at`` set), the backup's retention expires
them offsite like any object no longer wanted.
"""
from peewee import BigIntegerField, CharField, DateTimeField

from .core import BaseModel, utcnow


class BinnedObject(BaseModel):
    batch = CharField(index=True)  # one deletion (what `restore` brings back together)
    level = CharField()  # "study", "series" or "instance": what was deleted
    object_id = CharField(unique=True)
    sop_uid = CharField()
    series_uid = CharField()
    study_uid = CharField(index=True)
    patient_id = CharField(default="")
    size = BigIntegerField()
    sha256 = CharField()
    source = CharField(default="")
    deleted_at = DateTimeField(default=utcnow)
    deleted_by = CharField(default="")
    reason = CharField(default="")
    purge_after = DateTimeField(index=True)
    purged_at = DateTimeField(null=True)  # NULL: the object is still in the archive
