"""Index model for write batches in flight (appliance/corrections/, appliance/index/unfinished_batches.py; migration 0014).

A correction seals new versions of many objects before the one transaction that indexes them. It first
records here, durably, the ids of every object it will write; that transaction deletes the rows. Rows
still here at start-up (or in the index a rebuild starts from) name the objects of a batch that never
committed: never acknowledged, never indexed, discarded rather than counted as orphans.
"""
from peewee import CharField, DateTimeField

from .core import BaseModel, utcnow


class PendingObject(BaseModel):
    batch = CharField(index=True)  # one correction run
    object_id = CharField(unique=True)  # an object id allocated before sealing (archive.new_object_id)
    kind = CharField(default="correction")
    created_at = DateTimeField(default=utcnow)
