"""The registry of known DICOM peers (modalities, workstations, other archives).

A peer is an AE title with a host and port and what it may do here: send
images (store), query (C-FIND and the worklist), retrieve (C-MOVE/C-GET from
us) and receive (be a C-MOVE destination or a forwarding target). Kept in the
index so the CLI, the web admin and the DICOM node all see one list.

The registry also feeds the association allow-list (see ``allowed_callers``):
a registered peer may associate by its AE title from any address, because
modalities often get their address by DHCP; pin an address with
``[dicom] allowed_callers = ["AE@10.0.0.5"]`` when that matters.

A peer flagged ``tls`` is called over DICOM TLS (its port is then its TLS port)
for C-ECHO, C-MOVE sub-operations, forwarding and storage commitment reports;
``tls_args`` gives what ``AE.associate`` needs for that. Which peers may *call
us* over TLS is decided by the TLS listener's settings, not by this flag.
"""
from __future__ import annotations

import hashlib
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from ..errors import ApplianceError
from ..index import Index
from ..index.peers import Peer

AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash, no control chars
PERMISSIONS = ("can_store", "can_query", "can_retrieve", "can_receive_moves")
SETTABLE = {"host", "port", "description", "tls", "cert_fingerprint", *PERMISSIONS}
CACHE_SECONDS = 2.0  # how stale the permission snapshot used per request may be


class PeerError(ApplianceError):
    """A peer that cannot be added, changed or found."""

    exit_code = 2
    http_status = 400


class UnknownPeer(PeerError):
    http_status = 404


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    message: str
    millis: float


def _check(ae_title: str, host: str, port: int) -> tuple[str, str, int]:
    ae_title = (ae_title or "").strip()
    if not AE_TITLE.match(ae_title):
        raise PeerError(f"AE title {ae_title!r} is not valid: 1 to 16 printable characters, no backslash")
    host = (host or "").strip()
    if not host or any(c.isspace() for c in host):
        raise PeerError(f"host {host!r} is not valid: give an IP address or a host name")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise PeerError(f"port {port!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise PeerError(f"port {port} is out of range (1-65535)")
    return ae_title, host, port


def _fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint as stored: 64 lowercase hex digits; "" clears the pin.

    Takes what ``openssl x509 -noout -fingerprint -sha256`` prints, with or without the
    ``sha256 Fingerprint=`` prefix and the colons."""
    value = (value or "").strip()
    if not value:
        return ""
    digits = value.rpartition("=")[2].replace(":", "").replace(" ", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise PeerError(f"certificate fingerprint {value!r} is not a SHA-256 fingerprint: 64 hex digits, as "
                        "`openssl x509 -noout -fingerprint -sha256 -in CERT` prints them")
    return digits


def file_fingerprint(path: Path) -> str:
    """The SHA-256 fingerprint of the certificate in a PEM or DER file (for the CLI)."""
    data = path.read_bytes()
    if b"-----BEGIN CERTIFICATE-----" in data:
        data = ssl.PEM_cert_to_DER_cert(data.decode("ascii", "replace"))
    return hashlib.sha256(data).hexdigest()


class PeerRegistry:
    def __init__(self, index: Index, ae_title: str = "PACSBOX", timeout: float = 10.0,
                 tls_context: Callable[[], ssl.SSLContext] | None = None):
        self.index = index
        self.ae_title = ae_title  # our own AE title, used when we call a peer
        self.timeout = timeout
        self._tls_context = tls_context  # makes the client context on first use (appliance.dicom.tls)
        self._tls_made: ssl.SSLContext | None = None
        self._cache: dict[str, Peer] = {}
        self._cache_at = float("-inf")

    def list(self) -> list[Peer]:
        return self.index.peers.list()

    def get(self, ae_title: str) -> Peer | None:
        return self.index.peers.get((ae_title or "").strip())

    def require(self, ae_title: str) -> Peer:
        peer = self.get(ae_title)
        if peer is None:
            raise UnknownPeer(f"no registered peer with AE title {ae_title!r}: add it with "
                              "`pacs-appliance modality add`")
        return peer

    def add(self, ae_title: str, host: str, port: int, description: str = "", can_store: bool = True,
            can_query: bool = True, can_retrieve: bool = True, can_receive_moves: bool = True,
            tls: bool = False, cert_fingerprint: str = "") -> Peer:
        ae_title, host, port = _check(ae_title, host, port)
        fingerprint = _fingerprint(cert_fingerprint)

        peer = self.index.peers.add(ae_title, host=host, port=port, description=description.strip(),
                                    can_store=can_store, can_query=can_query, can_retrieve=can_retrieve,
                                    can_receive_moves=can_receive_moves, tls=bool(tls), cert_fingerprint=fingerprint)
        if peer is None:
            raise PeerError(f"a peer with AE title {ae_title!r} is already registered; "
                            "remove it first or update it")
        return peer

    def update(self, ae_title: str, **changes) -> Peer:
        """Change any of host, port, description, tls, cert_fingerprint and the can_* permissions."""
        unknown = set(changes) - SETTABLE
        if unknown:
            raise PeerError(f"cannot change {', '.join(sorted(unknown))} of a peer")
        peer = self.require(ae_title)
        _, host, port = _check(peer.ae_title, changes.get("host", peer.host), changes.get("port", peer.port))
        changes.update(host=host, port=port)
        if "cert_fingerprint" in changes:
            changes["cert_fingerprint"] = _fingerprint(changes["cert_fingerprint"])

        return self.index.peers.update(peer.id, **changes)

    def remove(self, ae_title: str) -> None:
        peer = self.require(ae_title)
        self.index.peers.remove(peer.id)

    def _snapshot(self, ae_title: str) -> Peer | None:
        """The registered peer from a snapshot at most CACHE_SECONDS old, so a C-STORE pays no query."""
        now = time.monotonic()
        if now - self._cache_at > CACHE_SECONDS:
            self._cache = {p.ae_title: p for p in self.index.peers.list()}
            self._cache_at = now
        return self._cache.get(ae_title.strip())

    def permits(self, ae_title: str, permission: str) -> bool:
        """Whether ``ae_title`` has ``permission`` (one of PERMISSIONS); unregistered callers have all."""
        peer = self._snapshot(ae_title)
        return peer is None or bool(getattr(peer, permission))

    def pinned_certificate(self, ae_title: str) -> str:
        """The SHA-256 fingerprint ``ae_title`` must call with over TLS ("" when not pinned or not registered)."""
        peer = self._snapshot(ae_title)
        return peer.cert_fingerprint if peer is not None else ""

    def allowed_callers(self) -> list[str]:
        """AE titles that may associate with us (feeds the association policy)."""
        return self.index.peers.ae_titles()

    def tls_args(self, peer: Peer) -> tuple[ssl.SSLContext, str] | None:
        """``tls_args`` for ``AE.associate`` to this peer: None unless it is flagged for TLS.

        Raises PeerError when the TLS settings cannot be used (e.g. ``[dicom] tls_ca`` is missing)."""
        if not peer.tls:
            return None
        if self._tls_made is None:
            if self._tls_context is None:
                raise PeerError(f"{peer.ae_title} is set to use DICOM TLS but this process has no TLS settings")
            try:
                self._tls_made = self._tls_context()
            except ApplianceError as exc:
                raise PeerError(f"cannot call {peer.ae_title} over TLS: {exc}") from None
        return self._tls_made, peer.host

    def echo(self, ae_title: str) -> EchoResult:
        """C-ECHO the peer; never raises for network trouble, reports it instead."""
        peer = self.require(ae_title)
        try:
            tls_args = self.tls_args(peer)
        except PeerError as exc:
            return EchoResult(False, str(exc), 0.0)
        return echo(self.ae_title, peer.ae_title, peer.host, peer.port, self.timeout, tls_args)


def echo(our_ae: str, ae_title: str, host: str, port: int, timeout: float = 10.0,
         tls_args: tuple[ssl.SSLContext, str] | None = None) -> EchoResult:
    ae = AE(ae_title=our_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    started = time.monotonic()
    over = " over TLS" if tls_args else ""
    try:
        assoc = ae.associate(host, port, ae_title=ae_title, tls_args=tls_args)
    except Exception as exc:  # noqa: BLE001 - DNS failure and the like, reported to the admin
        return EchoResult(False, f"cannot connect to {host}:{port}{over}: {exc}",
                          (time.monotonic() - started) * 1000)
    try:
        if not assoc.is_established:
            if assoc.is_rejected:
                reason = "association rejected"
            elif tls_args:
                from ..dicom.tls import diagnose

                reason = f"no association over TLS: {diagnose(tls_args, host, port, timeout)}"
            else:
                reason = "no answer (peer down or wrong host/port?)"
            return EchoResult(False, f"{ae_title} at {host}:{port}: {reason}",
                              (time.monotonic() - started) * 1000)
        status = assoc.send_c_echo()
        millis = (time.monotonic() - started) * 1000
        code = getattr(status, "Status", None)
        if code == 0:
            return EchoResult(True, f"{ae_title} at {host}:{port} answered C-ECHO{over}", millis)
        return EchoResult(False, f"{ae_title} answered C-ECHO with status "
                          f"{'none' if code is None else f'0x{code:04X}'}", millis)
    finally:
        if assoc.is_established:
            assoc.release()
