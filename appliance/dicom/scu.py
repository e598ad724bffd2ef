"""Sending stored objects to a peer with C-STORE: exact bytes when possible, lossless transcoding otherwise.

Used by C-MOVE and C-GET sub-operations and by forwarding. When the peer
accepted the object's stored transfer syntax, the stored dataset bytes go out
as they are, never decoded and re-encoded: the archive's plaintext is copied
into an anonymous in-memory file (memfd, never the data disk) and pynetdicom
sends it from there in chunks (``STORE_SEND_CHUNKED_DATASET``), so what the
peer receives is byte-identical to what we received. Otherwise ``transcode.choose``
picks a syntax the box can produce without loss among those the peer accepted and
``transcode.to_syntax`` writes the object in it (into the memfd too), or the
sub-operation fails with the reason. C-MOVE, C-GET and forwarding all send through
here, so they choose alike.

pynetdicom's C-MOVE/C-GET service calls ``assoc.send_c_store(dataset)`` for
each dataset our handler yields; ``install`` makes that call go through
``ObjectSender`` for the ``Outgoing`` placeholders we yield.
"""
from __future__ import annotations

import functools
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from ..archive import Archive
from ..convert.transcode import FALLBACKS, TranscodeError, choose, to_syntax
from ..errors import ApplianceError
from .sockets import tune_accepted_socket
from .tls import diagnose

log = logging.getLogger(__name__)

# Send a dataset given as a file path without decoding it (see module docstring).
_config.STORE_SEND_CHUNKED_DATASET = True
MAX_CONTEXTS = 128
UNCOMPRESSED = list(FALLBACKS)


class SendError(ApplianceError):
    """A C-STORE to a peer that did not succeed (no answer, refused, or not transcodable)."""


class Outgoing(Dataset):
    """What a C-MOVE/C-GET handler yields: a stored object, not yet read from the archive."""

    def __init__(self, sop_class_uid: str, sop_uid: str, object_id: str, transfer_syntax: str):
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_uid
        # plain attributes, not DICOM elements
        object.__setattr__(self, "object_id", object_id)
        object.__setattr__(self, "transfer_syntax", transfer_syntax)


@dataclass(frozen=True)
class SendOutcome:
    status: int
    transcoded: bool
    transfer_syntax: str = ""


def storage_contexts(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts to propose for (SOP class, stored transfer syntax) pairs.

    Each stored syntax gets a context of its own, so a receiver that takes it is asked for
    nothing else and gets the exact bytes (a receiver picks one syntax per context by its
    own preference: offered [big endian, little endian] together, storescp takes little
    endian). Each SOP class also gets one context with the little endian syntaxes
    ``transcode.to_syntax`` produces from anything, to fall back on.
    """
    contexts: dict[tuple[str, tuple[str, ...]], PresentationContext] = {}
    for sop_class, ts in sorted(set(pairs)):
        for syntaxes in ((str(ts),), tuple(UNCOMPRESSED)):
            contexts.setdefault((sop_class, syntaxes), build_context(sop_class, list(syntaxes)))
    result = list(contexts.values())
    if len(result) > MAX_CONTEXTS:
        raise SendError(f"{len(result)} presentation contexts needed, more than DICOM's {MAX_CONTEXTS}: "
                        "retrieve fewer SOP classes at once")
    return result


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    return [str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.as_scu]


class ObjectSender:
    def __init__(self, archive: Archive):
        self.archive = archive

    def send(self, assoc: Association, out: Outgoing, msg_id: int = 1, originator_aet: str | None = None,
             originator_id: int | None = None) -> SendOutcome:
        """C-STORE one stored object; return the peer's status, raise SendError/TranscodeError."""
        accepted = accepted_syntaxes(assoc, out.SOPClassUID)
        if not accepted:  # not transient: the peer does not take this SOP class
            raise TranscodeError(f"the peer accepted no presentation context for SOP class {out.SOPClassUID}")
        target = choose(out.transfer_syntax, accepted)  # TranscodeError when none can be produced
        fd = os.memfd_create("pacs-send", os.MFD_CLOEXEC)
        with os.fdopen(fd, "w+b") as fh:
            self.archive.copy_to(out.object_id, fh)
            fh.flush()
            if target != out.transfer_syntax:
                fh.seek(0)
                converted = to_syntax(fh.read(), out.transfer_syntax, target)
                fh.seek(0)
                fh.truncate()
                fh.write(converted)
                fh.flush()
                del converted
            # pynetdicom sends a file path on the accepted context of exactly its file meta's syntax
            status = Association.send_c_store(assoc, Path(f"/proc/self/fd/{fh.fileno()}"), msg_id=msg_id,
                                              originator_aet=originator_aet, originator_id=originator_id)
        code = getattr(status, "Status", None)
        if code is None:
            raise SendError("the peer did not answer the C-STORE (timeout or association lost)")
        return SendOutcome(int(code), target != out.transfer_syntax, target)

    def send_c_store(self, assoc: Association, dataset, msg_id: int = 1, priority: int = 2,
                     originator_aet: str | None = None, originator_id: int | None = None) -> Dataset:
        """Drop-in for ``Association.send_c_store`` used by pynetdicom's C-MOVE/C-GET service."""
        if not isinstance(dataset, Outgoing):
            return Association.send_c_store(assoc, dataset, msg_id, priority, originator_aet, originator_id)
        try:
            outcome = self.send(assoc, dataset, msg_id, originator_aet, originator_id)
        except (SendError, TranscodeError) as exc:
            log.warning("C-STORE sub-operation for instance %s failed: %s", dataset.SOPInstanceUID, exc)
            raise
        rsp = Dataset()
        rsp.Status = outcome.status
        return rsp

    def install(self, assoc: Association) -> None:
        """Route this association's C-STOREs through the sender (an instance attribute, not a patch)."""
        assoc.send_c_store = functools.partial(self.send_c_store, assoc)

    def on_established(self, event) -> None:
        self.install(event.assoc)

    def handlers(self) -> list:
        """Event handlers for a store association pynetdicom opens for us (the C-MOVE sub-operations)."""
        return [(evt.EVT_CONN_OPEN, nodelay), (evt.EVT_ESTABLISHED, self.on_established)]


def nodelay(event) -> None:
    """TCP_NODELAY and re-armed TCP_QUICKACK on our outgoing associations too (see sockets.py): without
    them each C-STORE of a C-MOVE to a Nagle-using peer (dcmtk, Orthanc) waits ~40-60 ms for a delayed ACK."""
    tune_accepted_socket(event)


def associate(our_ae: str, ae_title: str, host: str, port: int, contexts: list[PresentationContext],
              timeout: float = 30.0, tls_args: tuple[ssl.SSLContext, str] | None = None) -> Association:
    """A requestor association to a peer (over TLS with ``tls_args``), or SendError saying why there is none."""
    ae = AE(ae_title=our_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    try:
        assoc = ae.associate(host, port, contexts=contexts, ae_title=ae_title, tls_args=tls_args,
                             evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
    except Exception as exc:  # noqa: BLE001 - DNS and socket errors
        raise SendError(f"cannot connect to {ae_title} at {host}:{port}: {exc}") from None
    if not assoc.is_established:
        if assoc.is_rejected:
            what = "rejected the association"
        elif tls_args:
            what = f"gave no association over TLS: {diagnose(tls_args, host, port, timeout)}"
        else:
            what = "did not answer (down, or wrong host/port?)"
        raise SendError(f"{ae_title} at {host}:{port} {what}")
    return assoc
