"""Sending C-FIND pending responses without pynetdicom's per-message command-set work.

For each pending response a handler yields, pynetdicom (3.0, service_class.py
``_c_find_scp`` and dimse.py ``send_msg``) builds a C_FIND primitive, converts it to
a C_FIND_RSP message whose command set is a pydicom Dataset filled keyword by
keyword, encodes that command set twice (once to measure its group length) and
encodes the identifier Dataset with pydicom: ~0.4 ms of Python per match, most of
a 142-match study query.

Within one C-FIND request every pending response has the same command set
(Message ID Being Responded To, Affected SOP Class, Status FF00, a data set
present), so ``PendingSender`` encodes it once per request with pynetdicom's own
classes and then gives each response to the association's DUL as P-DATA. The PDVs
(message fragments) are the ones ``DIMSEMessage.encode_msg`` makes, split to the
peer's maximum PDU length the same way (tests/dicom/test_identifier.py compares
them). Unlike pynetdicom, which sends every PDV in a PDU of its own, the command
PDV and the identifier PDV of one response share a P-DATA-TF PDU when they fit
(PS3.8 9.3.5: a PDU carries "one or more" PDVs; dcm4che packs them the same way,
PDUEncoder.writeDIMSE with packPDV). That halves the PDUs and the DUL thread's
socket sends, the largest cost left per match once encoding was cheap. A PDU
still holds one message only: pynetdicom as a receiver, for one, drops the PDVs
of a second message in the same PDU.

``PendingSender.for_event`` returns None, and the caller yields Datasets through
pynetdicom as usual, whenever something needs the per-message path: a handler bound
to EVT_DIMSE_SENT (pynetdicom's standard debug logging binds one; a handler marked
``ignores_pending_find``, such as the association log's C-STORE tally, does not count), a transfer syntax
other than Implicit/Explicit VR Little Endian, or an association object without the
attributes this was written against.
"""
from __future__ import annotations

import ssl
import struct
import time
from io import BytesIO
from typing import Callable, Iterator

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

from .status import PENDING

# Responses are made faster than the DUL thread sends them: past this many queued PDUs (~100 KB)
# the handler waits, so a large result for a slow reader does not pile up in memory.
MAX_QUEUED_PDUS = 256
DIRECT_FLUSH_BYTES = 1 << 16  # the direct way writes this much at a time (~200 study-level responses)
_PDU_HEAD = struct.Struct(">BBI").pack  # PDU type, reserved, length
_ITEM_HEAD = struct.Struct(">IB").pack  # PDV item length (context ID + PDV), presentation context ID
# PS3.8 E.2 message control header: bit 0 command/data set, bit 1 last fragment
COMMAND_MORE, COMMAND_LAST, DATA_MORE, DATA_LAST = b"\x01", b"\x03", b"\x00", b"\x02"


def fragments(data: bytes, max_pdu: int, more: bytes, last: bytes) -> Iterator[bytes]:
    """PDV payloads (control header + fragment) that fit a PDU of ``max_pdu`` bytes (0: unlimited)."""
    size = len(data) if max_pdu == 0 else max_pdu - 6  # 6 = PDV item length + context ID + header
    if size <= 0:
        raise ValueError(f"maximum PDU length {max_pdu} leaves no room for data")
    offsets = range(0, len(data), size) if data else [0]
    for offset in offsets:
        chunk = data[offset:offset + size]
        yield (last if offset + size >= len(data) else more) + chunk


def pack(pdvs: list[bytes], max_pdu: int) -> Iterator[list[bytes]]:
    """``pdvs`` in order, grouped into as few PDUs as ``max_pdu`` (0: unlimited) allows."""
    group: list[bytes] = []
    size = 0
    for pdv in pdvs:
        item = 5 + len(pdv)  # item length (4) + presentation context ID (1) + PDV
        if group and max_pdu and size + item > max_pdu:
            yield group
            group, size = [], 0
        group.append(pdv)
        size += item
    if group:
        yield group


def encode_pdu(context_id: int, pdvs: list[bytes]) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) carrying ``pdvs`` (control header + fragment each) in ``context_id``."""
    items = [_ITEM_HEAD(len(pdv) + 1, context_id) + pdv for pdv in pdvs]
    return _PDU_HEAD(0x04, 0, sum(map(len, items))) + b"".join(items)


class PendingSender:
    """Sends pending responses of one C-FIND request without pynetdicom's per-message work.

    Two ways out. **Direct** (a plain TCP connection tuned by sockets.py): the responses are encoded
    into whole P-DATA-TF PDUs here and written ``DIRECT_FLUSH_BYTES`` at a time by the association
    thread itself (``TunedAssociationSocket.send_direct``), so a thousand matches cost a few dozen
    writes instead of a thousand trips through the DUL thread's queue, state machine and send, and
    the two threads no longer hand every PDU over under the GIL. **Queued** (TLS, or an association
    sockets.py did not tune): each response is given to the DUL as a P-DATA primitive. Either way the
    PDUs are the same bytes (tests/dicom/test_identifier.py). The caller must ``flush`` before it
    yields anything to pynetdicom (a status or a Dataset), so responses stay in order.
    """

    def __init__(self, dul, context_id: int, command: bytes, max_pdu: int, explicit_vr: bool,
                 established: Callable[[], bool] = lambda: True,
                 direct: Callable[[bytes], bool] | None = None):
        self._send_pdu = dul.send_pdu
        self._queue = getattr(dul, "to_provider_queue", None)
        self._established = established
        self._direct = direct
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.context_id = context_id
        self.max_pdu = max_pdu
        self.explicit_vr = explicit_vr
        self._command_pdvs = list(fragments(command, max_pdu, COMMAND_MORE, COMMAND_LAST))
        # The usual case, worked out once: one command PDV, and room beside it for an identifier of up to
        # _room bytes in the same PDU as a single fragment (pack() and fragments() would decide the same).
        self._command_item = _ITEM_HEAD(len(command) + 2, context_id) + COMMAND_LAST + command
        self._room = -1
        if len(self._command_pdvs) == 1:
            self._room = (1 << 31) if max_pdu == 0 else min(max_pdu - 6, max_pdu - len(self._command_item) - 6)

    @classmethod
    def for_event(cls, event) -> PendingSender | None:
        assoc = event.assoc
        context = event.context
        syntax = context.transfer_syntax
        if syntax not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
            return None
        dul = getattr(assoc, "dul", None)
        dimse = getattr(assoc, "dimse", None)
        if not callable(getattr(dul, "send_pdu", None)) or dimse is None:
            return None
        if any(not getattr(handler, "ignores_pending_find", False)
               for handler, _args in assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            return None  # someone watches every message sent (pynetdicom's debug log): its path, not ours
        transport = getattr(dul, "socket", None)
        direct = getattr(transport, "send_direct", None)
        if direct is None or getattr(transport, "send_lock", None) is None \
                or isinstance(getattr(transport, "socket", None), ssl.SSLSocket) \
                or assoc.get_handlers(evt.EVT_PDU_SENT) or assoc.get_handlers(evt.EVT_DATA_SENT):
            direct = None  # someone watches every PDU or byte sent (or TLS): through the DUL
        return cls(dul, context.context_id, pending_command_set(event.request), dimse.maximum_pdu_size,
                   explicit_vr=syntax == ExplicitVRLittleEndian, established=lambda: assoc.is_established,
                   direct=direct)

    def send(self, identifier: bytes) -> bool:
        """One pending response: the command set, then ``identifier`` (encoded in the context's syntax).
        False once the association is gone (nothing more will reach the peer)."""
        if self._direct is not None:
            if len(identifier) < self._room:
                item = _ITEM_HEAD(len(identifier) + 2, self.context_id) + DATA_LAST + identifier
                pdu = _PDU_HEAD(0x04, 0, len(self._command_item) + len(item)) + self._command_item + item
                self._buffer.append(pdu)
                self._buffered += len(pdu)
            else:
                for group in pack(self._pdvs(identifier), self.max_pdu):
                    pdu = encode_pdu(self.context_id, group)
                    self._buffer.append(pdu)
                    self._buffered += len(pdu)
            return self.flush() if self._buffered >= DIRECT_FLUSH_BYTES else True
        queue = self._queue
        while queue is not None and queue.qsize() >= MAX_QUEUED_PDUS and self._established():
            time.sleep(0.001)
        if not self._established():
            return False
        for group in pack(self._pdvs(identifier), self.max_pdu):
            primitive = P_DATA()
            for pdv in group:
                primitive.presentation_data_value_list.append((self.context_id, pdv))
            self._send_pdu(primitive)
        return True

    def flush(self) -> bool:
        """Write what ``send`` buffered (direct way); False once the association is gone."""
        if not self._buffer:
            return self._established()
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        queue = self._queue  # whatever pynetdicom queued before goes out first
        while queue is not None and not queue.empty() and self._established():
            time.sleep(0.001)
        return self._established() and self._direct(data)

    def _pdvs(self, identifier: bytes) -> list[bytes]:
        return self._command_pdvs + list(fragments(identifier, self.max_pdu, DATA_MORE, DATA_LAST))


def pending_command_set(request) -> bytes:
    """The encoded command set of a pending C-FIND-RSP to ``request``, as pynetdicom's send_msg builds it."""
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = request.MessageID
    rsp.AffectedSOPClassUID = request.AffectedSOPClassUID
    rsp.Status = PENDING
    rsp.Identifier = BytesIO(b"\0\0")  # present: sets Command Data Set Type to "data set follows"
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    return encode(message.command_set, True, True)
