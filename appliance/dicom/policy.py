"""Who may associate: the called AE title must be ours, and the calling AE (and its host) allowed.

Allowed callers come from the config (``[dicom] allowed_callers``, entries
"AE" or "AE@host") and from the peer registry, passed in as a callable so a
peer added at run time is allowed without a restart. An empty list allows any
caller (a fresh box must accept its first modality without set-up).
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)


class AssociationPolicy:
    def __init__(self, ae_title: str, allowed_callers: Callable[[], Iterable[str]]):
        self.ae_title = ae_title.strip()
        self.allowed_callers = allowed_callers

    def check(self, called: str, calling: str, host: str) -> tuple[int, int, int] | None:
        """Return a rejection (result, source, reason) or None to accept."""
        if called.strip() != self.ae_title:
            return REJECT_CALLED_AE
        allowed = [a.strip() for a in self.allowed_callers() if a.strip()]
        if not allowed:
            return None
        calling = calling.strip()
        for entry in allowed:
            ae, _, entry_host = entry.partition("@")
            if ae == calling and (not entry_host or entry_host == host):
                return None
        return REJECT_CALLING_AE
