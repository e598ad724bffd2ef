"""Index models for the retrieval area (see models/__init__.py)."""
from .core import BaseModel  # noqa: F401
