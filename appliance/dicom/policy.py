"""Who may associate: the called AE title must be ours, and the calling AE (and its host) allowed.

Allowed callers come from the config (``[dicom] allowed_callers``, entries
"AE" or "AE@host") and from the peer registry, passed in as a callable so a
peer added at run time is allowed without a restart. An empty list allows any
caller (a fresh box must accept its first modality without set-up).

Over TLS the client certificate is tied to the AE title it calls as
(``check_certificate``): a peer with a pinned certificate (``modality add
--cert-fingerprint``) must present exactly that one; otherwise, when client
certificates are required, the certificate's common name must be the calling
AE title. Without this any holder of a clinic-issued certificate could call as
any registered peer.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)


class AssociationPolicy:
    def __init__(self, ae_title: str, allowed_callers: Callable[[], Iterable[str]],
                 pinned_certificate: Callable[[str], str] | None = None):
        self.ae_title = ae_title.strip()
        self.allowed_callers = allowed_callers
        self.pinned_certificate = pinned_certificate  # AE title -> SHA-256 hex it must call with over TLS, or ""

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

    def check_certificate(self, calling: str, fingerprint: str | None, common_name: str | None,
                          required: bool) -> str | None:
        """Why the TLS client certificate (SHA-256 ``fingerprint`` and subject ``common_name``, None when
        none was sent) does not entitle its holder to call as ``calling``; None when it does."""
        calling = calling.strip()
        pinned = self.pinned_certificate(calling) if self.pinned_certificate is not None else ""
        if pinned:
            if fingerprint == pinned:
                return None
            sent = f"sha256 {fingerprint}" if fingerprint else "none"
            return f"its client certificate ({sent}) is not the one pinned for {calling} (sha256 {pinned})"
        if not required or common_name == calling:
            return None
        return (f"its client certificate names {common_name!r}, not {calling!r}: pin that certificate to "
                f"{calling} (`pacs-appliance modality update {calling} --cert-fingerprint {fingerprint}`), "
                f"or issue {calling} a certificate with CN={calling}")
