"""C-STORE responses written straight to the socket by the association thread.

For each C-STORE, pynetdicom (3.0, ``StorageServiceClass.SCP`` and dimse.py ``send_msg``)
turns the response primitive into a C_STORE_RSP message whose command set is a pydicom
Dataset filled keyword by keyword, encodes it twice (once to measure its group length),
makes P-DATA primitives of it and queues them for the DUL thread, which wakes up, runs
its state machine and encodes the P-DATA-TF PDU: about a sixth of the interpreter time
of an ingest (issue 18), and a hand-over between two threads before the sender sees
its answer.

A successful (or warning) response with nothing but the usual elements has a fixed
layout: ``command_set`` encodes it directly (tests/dicom/test_store_response.py compares
the bytes with pynetdicom's), and ``DirectStoreResponses`` sends it as one P-DATA-TF PDU
through ``TunedAssociationSocket.send_direct``, like pending.py does for C-FIND. Anything
else goes through pynetdicom as before: another message or status with an error comment
or offending element, a handler bound to EVT_DIMSE_SENT that has not said it takes a
``SentStoreResponse`` (pynetdicom's debug logging, say), a handler of EVT_PDU_SENT or
EVT_DATA_SENT, TLS, an untuned socket, or something still queued for the DUL thread (so
responses stay in order).
"""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from . import outbound
from .outbound import C_STORE_RSP, NO_DATA_SET, uid_value, us_value
from .pending import COMMAND_LAST, COMMAND_MORE, encode_pdu, fragments, pack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentStoreResponse:
    """What EVT_DIMSE_SENT handlers marked ``takes_sent_store_response`` get for a direct response."""

    context_id: int
    status: int


def command_set(primitive: C_STORE) -> bytes | None:
    """The encoded command set of the C-STORE-RSP ``primitive`` (Implicit VR Little Endian, as pynetdicom
    encodes it), or None when it carries more than this handles (an error comment, an offending element)."""
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None \
            or primitive.Status is None or primitive.MessageIDBeingRespondedTo is None:
        return None
    elements = [(0x0002, uid_value(primitive.AffectedSOPClassUID))] if primitive.AffectedSOPClassUID else []
    elements += [(0x0100, us_value(C_STORE_RSP)), (0x0120, us_value(primitive.MessageIDBeingRespondedTo)),
                 (0x0800, us_value(NO_DATA_SET)), (0x0900, us_value(primitive.Status))]
    if primitive.AffectedSOPInstanceUID:
        elements.append((0x1000, uid_value(primitive.AffectedSOPInstanceUID)))
    return outbound.command_set(elements)


class DirectStoreResponses:
    """Stands in for an association's ``dimse.send_msg``: C-STORE responses go out directly, everything
    else (and every response this cannot send directly) through pynetdicom's own ``send_msg``."""

    def __init__(self, assoc, send_msg, send_direct):
        self._assoc = assoc
        self._send_msg = send_msg
        self._send_direct = send_direct

    def __call__(self, primitive, context_id: int) -> None:
        if type(primitive) is C_STORE and self._direct(primitive, context_id):
            return
        self._send_msg(primitive, context_id)

    def _direct(self, primitive: C_STORE, context_id: int) -> bool:
        assoc = self._assoc
        dul = assoc.dul
        queued = getattr(dul, "to_provider_queue", None)
        if queued is None or not queued.empty() or not assoc.is_established:
            return False
        watchers = assoc.get_handlers(evt.EVT_DIMSE_SENT)
        if any(not getattr(handler, "takes_sent_store_response", False) for handler, _args in watchers) \
                or assoc.get_handlers(evt.EVT_PDU_SENT) or assoc.get_handlers(evt.EVT_DATA_SENT):
            return False
        command = command_set(primitive)
        if command is None:
            return False
        max_pdu = assoc.dimse.maximum_pdu_size
        data = b"".join(encode_pdu(context_id, group)
                        for group in pack(list(fragments(command, max_pdu, COMMAND_MORE, COMMAND_LAST)), max_pdu))
        if watchers:
            evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": SentStoreResponse(context_id, primitive.Status)})
        self._send_direct(data)  # False: the connection is gone, and the DUL was told (as pynetdicom's send)
        return True


def direct_store_responses(event) -> None:
    """EVT_CONN_OPEN handler (bound after sockets.tune_accepted_socket): send this association's C-STORE
    responses directly when its socket was tuned for it (plain TCP, a send lock)."""
    assoc = event.assoc
    transport = getattr(assoc.dul, "socket", None)
    dimse = getattr(assoc, "dimse", None)
    send_direct = getattr(transport, "send_direct", None)
    if send_direct is None or getattr(transport, "send_lock", None) is None or dimse is None \
            or isinstance(getattr(transport, "socket", None), ssl.SSLSocket) \
            or not callable(getattr(dimse, "send_msg", None)) or "send_msg" in vars(dimse):
        return
    dimse.send_msg = DirectStoreResponses(assoc, dimse.send_msg, send_direct)
