"""The modality worklist and the performed procedure steps (MPPS) that update it."""
from __future__ import annotations

from .repository import Repository


class WorklistRepo(Repository):
    pass
