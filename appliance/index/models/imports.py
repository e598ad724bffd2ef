"""Index models for the imports area (see models/__init__.py).

No tables yet, on purpose: the inbox folder itself is the durable queue. A file
leaves it only after its content is stored, and ingest recognises an identical
object as already present, so a restart simply re-offers what is left (see
appliance/importer/watcher.py). Import runs are recorded in the audit log.
"""
from .core import BaseModel  # noqa: F401
