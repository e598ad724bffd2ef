"""Index models for the backup area (see models/__init__.py)."""
from .core import BaseModel  # noqa: F401
