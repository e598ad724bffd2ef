"""Index models for the web area (see models/__init__.py)."""
from .core import BaseModel  # noqa: F401
