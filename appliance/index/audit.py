"""The append-only, hash-chained audit log (appliance/audit.py computes the chain)."""
from __future__ import annotations

from .repository import Repository


class AuditRepo(Repository):
    pass
