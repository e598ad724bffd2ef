"""Known DICOM peers (application entities) and what each may do."""
from __future__ import annotations

from .repository import Repository


class PeersRepo(Repository):
    pass
