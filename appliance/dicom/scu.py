"""Sending stored objects to a peer with C-STORE: exact bytes when possible, lossless transcoding otherwise.

Used by C-MOVE and C-GET sub-operations and by forwarding. When the peer
accepted the object's stored transfer syntax, the stored dataset bytes go out
as they are, never decoded and re-encoded, so what the peer receives is
byte-identical to what we received. Otherwise ``transcode.choose`` picks a syntax
the box can produce without loss among those the peer accepted and
``transcode.to_syntax`` writes the object in it (in memory), or the sub-operation
fails with the reason. C-MOVE, C-GET and forwarding all send through here, so
they choose alike.

The decrypted plaintext never touches the data disk: its data set goes out as
whole PDUs from memory (outbound.py), and the next object of a retrieve is
decrypted while the peer answers the current one (``chain``). Where outbound.py
does not apply (a handler watching every message sent, or a Part 10 meta without
group length), the plaintext goes into an anonymous in-memory file (memfd) and
pynetdicom sends it from there in chunks (``STORE_SEND_CHUNKED_DATASET``).

pynetdicom's C-MOVE service calls ``assoc.send_c_store(dataset)`` for each
dataset our handler yields, the box's C-GET loop (get_loop.py)
``assoc.pacs_store_status``; ``install`` makes both go through ``ObjectSender``
for the ``Outgoing`` placeholders we yield.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext

from ..archive import Archive
from ..convert.transcode import FALLBACKS, TranscodeError, choose, to_syntax
from ..errors import ApplianceError
from .outbound import Outbound, receive_store_responses, store_request
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
    """What a C-MOVE/C-GET handler yields: a stored object, not yet read from the archive.

    A pydicom Dataset because pynetdicom requires one, but holding no elements: its SOP Class and
    Instance UIDs are plain attributes, read by ``ObjectSender`` and by pynetdicom for a failed
    sub-operation (two pydicom elements cost ~35 us to make: 3.5 ms of a 100-instance retrieve)."""

    def __init__(self, sop_class_uid: str, sop_uid: str, object_id: str, transfer_syntax: str):
        # An empty Dataset's state, copied: Dataset.__init__ sets it through __setattr__ (~8 us each)
        self.__dict__.update({key: value.copy() if isinstance(value, dict) else value
                              for key, value in _EMPTY_DATASET.items()})
        object.__setattr__(self, "_uids", (str(sop_class_uid), str(sop_uid)))
        object.__setattr__(self, "object_id", object_id)
        object.__setattr__(self, "transfer_syntax", transfer_syntax)

    SOPClassUID = property(lambda self: self._uids[0])
    SOPInstanceUID = property(lambda self: self._uids[1])

    def __bool__(self) -> bool:  # never empty: pynetdicom sends a Pending sub-operation's data set only if truthy
        return True


_EMPTY_DATASET = dict(Dataset().__dict__)


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


def sending_contexts(assoc: Association, sop_class: str) -> list[PresentationContext]:
    """The accepted contexts in which we may send ``sop_class``, worked out once per association
    (pynetdicom's ``accepted_contexts`` builds its list anew at each call: ~10 % of a C-GET sub-operation)."""
    table = assoc.__dict__.get("_pacs_sending_contexts")
    if table is None:
        table = {}
        for cx in assoc.accepted_contexts:
            if cx.as_scu:
                table.setdefault(str(cx.abstract_syntax), []).append(cx)
        if assoc.is_established:  # the contexts are fixed from now on
            assoc._pacs_sending_contexts = table
    return table.get(str(sop_class), [])


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    return [str(cx.transfer_syntax[0]) for cx in sending_contexts(assoc, sop_class)]


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
        data = self._plaintext(out)
        if target != out.transfer_syntax:
            data = to_syntax(data, out.transfer_syntax, target)
        offset = dataset_offset(data)
        outbound = Outbound.for_assoc(assoc) if offset is not None else None
        if outbound is None:
            code = self._send_from_file(assoc, data, msg_id, originator_aet, originator_id)
        else:
            code = self._send_direct(assoc, outbound, out, target, memoryview(data)[offset:], msg_id,
                                     originator_aet, originator_id)
        if code is None:
            raise SendError("the peer did not answer the C-STORE (timeout or association lost)")
        return SendOutcome(int(code), target != out.transfer_syntax, target)

    def _plaintext(self, out: Outgoing) -> bytes:
        ahead = out.__dict__.pop("prefetched", None)
        return ahead if ahead is not None else self.archive.read(out.object_id)

    def _prefetch(self, out: Outgoing | None) -> None:
        """Decrypt the next object of the retrieve while the peer handles this one (one object ahead)."""
        if out is None or "prefetched" in out.__dict__:
            return
        try:
            object.__setattr__(out, "prefetched", self.archive.read(out.object_id))
        except Exception:  # noqa: BLE001 - its own sub-operation reads it again and reports the error
            pass

    def _send_direct(self, assoc: Association, outbound: Outbound, out: Outgoing, target: str, dataset,
                     msg_id: int, originator_aet, originator_id) -> int | None:
        """The C-STORE-RQ as whole PDUs (outbound.py), then the peer's C-STORE-RSP from the DIMSE queue."""
        context = next((cx for cx in sending_contexts(assoc, out.SOPClassUID)
                        if str(cx.transfer_syntax[0]) == target), None)
        if context is None:
            raise TranscodeError(f"no accepted presentation context for {out.SOPClassUID} in {target}")
        command = store_request(msg_id, out.SOPClassUID, out.SOPInstanceUID, 2, originator_aet, originator_id)
        if threading.current_thread() is assoc:  # a C-GET: this is the reactor's thread, so it takes nothing
            rsp = self._exchange(assoc, outbound, context.context_id, command, dataset, out)
        else:
            with reactor_paused(assoc):
                rsp = self._exchange(assoc, outbound, context.context_id, command, dataset, out)
        if rsp is False:  # the association went while sending
            return None
        if rsp is None:  # no answer within the DIMSE timeout, or the association is gone
            if assoc.is_established:
                assoc.abort()
            return None
        if type(rsp) is not C_STORE or not rsp.is_valid_response:
            log.error("the peer answered a C-STORE with %s", type(rsp).__name__)
            assoc.abort()
            return None
        return rsp.Status

    def _exchange(self, assoc: Association, outbound: Outbound, context_id: int, command: bytes, dataset,
                  out: Outgoing):
        """Send the C-STORE-RQ, decrypt the next object, wait for the answer: the C_STORE response, None
        (none within the DIMSE timeout), or False (the association is gone)."""
        responses = assoc.dimse.get_msg
        claim_ahead = getattr(responses, "claim_ahead", None)  # outbound.InlineResponses: read the answer here
        if claim_ahead is not None:
            claim_ahead()
        try:
            if not outbound.send(context_id, command, dataset):
                return False
            self._prefetch(out.__dict__.get("following"))
            return responses(block=True)[1]
        finally:
            if claim_ahead is not None:
                responses.drop()  # a no-op once the answer was read

    @staticmethod
    def _send_from_file(assoc: Association, data: bytes, msg_id: int, originator_aet, originator_id):
        """pynetdicom's own way: it sends a file path on the accepted context of its file meta's syntax."""
        fd = os.memfd_create("pacs-send", os.MFD_CLOEXEC)
        with os.fdopen(fd, "w+b") as fh:
            fh.write(data)
            fh.flush()
            status = Association.send_c_store(assoc, Path(f"/proc/self/fd/{fh.fileno()}"), msg_id=msg_id,
                                              originator_aet=originator_aet, originator_id=originator_id)
        return getattr(status, "Status", None)

    def send_c_store(self, assoc: Association, dataset, msg_id: int = 1, priority: int = 2,
                     originator_aet: str | None = None, originator_id: int | None = None) -> Dataset:
        """Drop-in for ``Association.send_c_store`` used by pynetdicom's C-MOVE/C-GET service."""
        if not isinstance(dataset, Outgoing):
            return Association.send_c_store(assoc, dataset, msg_id, priority, originator_aet, originator_id)
        rsp = Dataset()
        rsp.Status = self.store_status(assoc, dataset, msg_id, originator_aet, originator_id)
        return rsp

    def store_status(self, assoc: Association, out: Outgoing, msg_id: int = 1, originator_aet: str | None = None,
                     originator_id: int | None = None) -> int:
        """One sub-operation's C-STORE status (get_loop.py calls it: no Dataset for the answer)."""
        if not isinstance(out, Outgoing):
            return Association.send_c_store(assoc, out, msg_id, 2, originator_aet, originator_id).Status
        try:
            return self.send(assoc, out, msg_id, originator_aet, originator_id).status
        except (SendError, TranscodeError) as exc:
            log.warning("C-STORE sub-operation for instance %s failed: %s", out.SOPInstanceUID, exc)
            raise

    def install(self, assoc: Association) -> None:
        """Route this association's C-STOREs through the sender (an instance attribute, not a patch), and its
        other DIMSE messages (the Pending C-GET responses) through outbound.py when it can."""
        assoc.send_c_store = functools.partial(self.send_c_store, assoc)
        assoc.pacs_store_status = functools.partial(self.store_status, assoc)
        receive_store_responses(assoc)
        outbound = Outbound.for_assoc(assoc)
        if outbound is not None:
            outbound.install()

    def on_established(self, event) -> None:
        self.install(event.assoc)

    def handlers(self) -> list:
        """Event handlers for a store association pynetdicom opens for us (the C-MOVE sub-operations)."""
        return [(evt.EVT_CONN_OPEN, nodelay), (evt.EVT_ESTABLISHED, self.on_established)]


def chain(outgoing: list[Outgoing]) -> list[Outgoing]:
    """Link each placeholder to the next, so its sub-operation can decrypt that one ahead (``_prefetch``)."""
    for current, following in zip(outgoing, outgoing[1:]):
        object.__setattr__(current, "following", following)
    return outgoing


def dataset_offset(part10: bytes) -> int | None:
    """Where the data set starts in a Part 10 file whose meta starts with its group length; None otherwise."""
    if len(part10) < 144 or part10[128:132] != b"DICM" or part10[132:138] != b"\x02\x00\x00\x00UL":
        return None
    end = 144 + int.from_bytes(part10[140:144], "little")
    return end if end <= len(part10) else None


@contextlib.contextmanager
def reactor_paused(assoc: Association):
    """Keep the association's reactor from taking our C-STORE-RSP off the DIMSE queue, as pynetdicom's
    ``send_c_store`` does. On the reactor's own thread (a C-GET) it is paused already; a queue tuned by
    sockets.py refuses the reactor while the checkpoint is clear, so there is no need to wait for it."""
    checkpoint = assoc._reactor_checkpoint
    checkpoint.clear()
    try:
        messages = assoc.dimse.msg_queue
        if threading.current_thread() is not assoc and getattr(messages, "checkpoint", None) is not checkpoint:
            while not assoc._is_paused:
                time.sleep(0.0001)
        yield
    finally:
        checkpoint.set()


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
