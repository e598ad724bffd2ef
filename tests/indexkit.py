"""Reading an index from tests without its models: the query engine first, then one fallback.

The index is a seam (tests/architecture/test_index_seam.py): tests read what the
appliance reads, through an ``Index``. ``rows`` is the fallback for tables no
repository lists (web sessions, replaced objects); it runs against the given
index's own database, as the repositories do.
"""
from __future__ import annotations

from appliance.index import Index
from appliance.index.models import all_models

_MODELS = {model.__name__: model for model in all_models()}


def instances(index: Index) -> dict[str, str]:
    """SOP Instance UID -> archive object id, for every indexed instance."""
    return {r["SOPInstanceUID"]: r["_object_id"] for r in index.search("IMAGE", {})}


def counters(index: Index) -> dict[str, int]:
    """Instances in the index, and the per-study/per-patient counters C-FIND reports."""
    return {
        "instances": index.count("IMAGE", {}),
        "study_counters": sum(r["NumberOfStudyRelatedInstances"] for r in index.search("STUDY", {})),
        "patient_counters": sum(r["NumberOfPatientRelatedInstances"] for r in index.search("PATIENT", {})),
    }


def rows(index: Index, model: str, **equal) -> list:
    """The rows of one table (by model name, e.g. "WebSession") whose columns equal ``equal``, by id."""
    cls = _MODELS[model]
    query = cls.select().order_by(cls.id)
    for name, value in equal.items():
        query = query.where(getattr(cls, name) == value)
    return list(query.execute(index.db))
