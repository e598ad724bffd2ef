"""Index models for the imports area (see models/__init__.py)."""
from .core import BaseModel  # noqa: F401
