"""C-STORE SCP: every object goes through the one ingest path, and the status tells the truth.

A caller registered in the peer registry without the store permission (``--no-store``)
is refused; unregistered callers the association policy let in may store.
"""
from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, AllStoragePresentationContexts, evt

from ..errors import ApplianceError
from ..ingest import Ingestor, Origin
from .registry import DimseService, Handler
from .status import NOT_AUTHORIZED, PROCESSING_FAILURE, SUCCESS, status

if TYPE_CHECKING:  # records.peers loads the index (peewee, SQLCipher), which an ingest worker never opens
    from ..records.peers import PeerRegistry

log = logging.getLogger(__name__)
# Every storage SOP class pynetdicom knows; others (new, private) are served too (any_sop_class).
STORAGE_SOP_CLASSES = tuple(cx.abstract_syntax for cx in AllStoragePresentationContexts)


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of group 0002 (value already padded to even length)."""
    if vr == b"OB":
        return struct.pack("<HH2sHI", 2, tag, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, tag, vr, len(value)) + value


def _uid(value) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


_IMPLEMENTATION = (_element(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID))
                   + _element(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
                              + b" " * (len(PYNETDICOM_IMPLEMENTATION_VERSION) % 2)))


def part10_header(sop_class_uid, sop_instance_uid, transfer_syntax) -> bytes:
    """Preamble, "DICM" and the file meta of a received C-STORE data set: the bytes pynetdicom's
    ``Event.encoded_dataset`` puts before it, without its pydicom Dataset and writer (~0.2 ms each)."""
    body = (_element(0x0001, b"OB", b"\0\x01") + _element(0x0002, b"UI", _uid(sop_class_uid))
            + _element(0x0003, b"UI", _uid(sop_instance_uid)) + _element(0x0010, b"UI", _uid(transfer_syntax))
            + _IMPLEMENTATION)
    return b"\0" * 128 + b"DICM" + _element(0x0000, b"UL", struct.pack("<I", len(body))) + body


@dataclass(frozen=True)
class ReceivedStore:
    """What the C-STORE handler needs of a received request, from pynetdicom's event (``from_event``) or
    read straight off the socket (inline_store.py): the data set as the fragments that arrived."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    dataset: Sequence[bytes | bytearray | memoryview]

    @classmethod
    def from_event(cls, event) -> ReceivedStore:
        request = event.request
        return cls(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID, event.context.transfer_syntax,
                   (request.DataSet.getvalue(),))

    def part10(self) -> bytes:
        """The received object as a Part 10 file: its data set bytes exactly as they arrived (one copy)."""
        return b"".join((part10_header(self.sop_class_uid, self.sop_instance_uid, self.transfer_syntax),
                         *self.dataset))


def store_received(assoc, received: ReceivedStore, ingestor: Ingestor):
    """Ingest one received object; its DIMSE status (an int, or a status Dataset with the reason)."""
    calling = assoc.requestor.ae_title.strip()
    origin = Origin("dicom", f"{calling}@{assoc.requestor.address}")
    try:
        ingestor.store_bytes(received.part10(), origin)
    except ApplianceError as exc:
        log.warning("C-STORE from %s refused (0x%04X): %s", calling, exc.dimse_status, exc)
        return status(exc.dimse_status, str(exc))
    except Exception:  # noqa: BLE001 - never take the node down, never claim success
        log.exception("C-STORE from %s failed", calling)
        return status(PROCESSING_FAILURE, "internal error while storing; see the appliance log")
    return SUCCESS


def store_received_if_permitted(assoc, received: ReceivedStore, ingestor: Ingestor, peers: PeerRegistry):
    calling = assoc.requestor.ae_title.strip()
    if not peers.permits(calling, "can_store"):
        return status(NOT_AUTHORIZED, f"{calling} is registered without permission to store")
    return store_received(assoc, received, ingestor)


def handle_store(event, ingestor: Ingestor):
    return store_received(event.assoc, ReceivedStore.from_event(event), ingestor)


def store_if_permitted(event, ingestor: Ingestor, peers: PeerRegistry):
    return store_received_if_permitted(event.assoc, ReceivedStore.from_event(event), ingestor, peers)


# The same handlers without pynetdicom's event, for C-STOREs read by inline_store.py: (assoc, ReceivedStore, *args)
handle_store.received = store_received
store_if_permitted.received = store_received_if_permitted


def service(ingestor: Ingestor, peers: PeerRegistry | None = None) -> DimseService:
    handler = (Handler(evt.EVT_C_STORE, store_if_permitted, (ingestor, peers)) if peers is not None
               else Handler(evt.EVT_C_STORE, handle_store, (ingestor,)))
    return DimseService("Storage", STORAGE_SOP_CLASSES, (handler,), any_sop_class=True, reference="PS3.4 Annex B")
