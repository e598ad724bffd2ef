"""The index's peewee models, one module per area, bound to no database: each repository runs its queries
against its own Index's database (repository.py). Only appliance/index imports them.

- core.py: patients, studies, series, instances, replaced objects, users
- retrieval.py: DICOM peers, worklist, MPPS, forwarding queue
- web.py: audit log, API tokens, web sessions
- backup.py: backup runs and offsite state
- imports.py: inbox import bookkeeping
- recycle.py: studies recycled to free space (their only copy is offsite)
- commitment.py: storage commitment requests until their report is delivered
- bin.py: the recycle bin of deleted studies, series and instances
- batch.py: object ids of write batches (corrections) not yet committed

A model change needs a numbered migration in ../migrations/.
"""
from . import backup, batch, bin, commitment, core, imports, recycle, retrieval, web  # noqa: F401 - registers the models
from .core import BaseModel, Instance, Patient, ReplacedObject, Series, Study, User, utcnow


def all_models() -> list[type[BaseModel]]:
    found, todo = [], list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop(0)
        found.append(model)
        todo.extend(model.__subclasses__())
    return found


__all__ = ["BaseModel", "Instance", "Patient", "ReplacedObject", "Series", "Study", "User", "all_models", "utcnow"]
