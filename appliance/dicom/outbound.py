"""How an association's DIMSE messages leave, and how a retrieve's C-STORE-RSPs come back: as whole PDUs.

Per message pynetdicom (3.0, ``DIMSEServiceProvider.send_msg``) fills a pydicom command
set keyword by keyword, encodes it twice, queues every PDU for the DUL thread (each a
wake-up and a thread switch under the GIL), and the DUL thread encodes the PDU; per
C-STORE sub-operation ``Association.send_c_store`` also reads the object's file meta back
with pydicom. That was ~2 ms of Python per retrieved instance and a sixth of an ingest's
interpreter time (bench/README.md, issue 18).

``Outbound`` is the one way out of an association: installed as its ``dimse.send_msg`` at
connection open (``on_connection_open``, after sockets.py tuned the socket), it encodes the
fixed-layout messages itself (``store_response`` for C-STORE-RSPs, ``store_request``,
``retrieve_response`` for Pending C-GET/C-MOVE-RSPs: the bytes pynetdicom makes, compared in
tests/dicom/test_outbound.py and test_store_response.py), lets pynetdicom encode every
other message, and sends each as P-DATA-TF PDUs of at most the peer's maximum PDU length
(pending.py's ``fragments``/``pack``). On a plain TCP connection sockets.py tuned, the
sending thread writes them itself (``TunedAssociationSocket.send_direct``), one message at
a time, after anything still queued for the DUL; on TLS they are queued to the DUL as P-DATA
primitives (an SSL object must not be written by one thread while another reads it).
``Outbound.for_assoc`` returns None, and pynetdicom's own ``send_msg`` stays, when a handler
watches every message sent (pynetdicom's debug logging); a handler watching every PDU or
byte sent makes it queue.

Coming back, a C-GET/C-MOVE sub-operation's C-STORE-RSP is read by the thread waiting for it
(``InlineResponses``, installed by ``receive_store_responses`` with the sub-operations), and
a plain one that the DUL thread does read skips pynetdicom's DIMSE decoding.
"""
from __future__ import annotations

import itertools
import ssl
import struct
import threading
import time
from dataclasses import dataclass
from types import SimpleNamespace

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_ECHO, C_GET, C_MOVE, C_STORE
from pynetdicom.pdu_primitives import P_DATA

from .pending import (COMMAND_LAST, COMMAND_MORE, DATA_LAST, DATA_MORE, MAX_QUEUED_PDUS, encode_pdu, fragments,
                      pack)
from .status import PENDING

_TAG_LEN = struct.Struct("<HHI").pack  # implicit VR little endian element header: group, element, length
_READ_TAG_LEN = struct.Struct("<HHI").unpack_from
us_value = struct.Struct("<H").pack  # a US value (2 bytes, little endian)
C_STORE_RQ, C_STORE_RSP, C_GET_RSP, C_MOVE_RSP, C_ECHO_RSP = 0x0001, 0x8001, 0x8010, 0x8021, 0x8030
# The elements of a plain C-STORE-RSP (PS3.7 9.3.1.2); one with anything else (Error Comment, Offending
# Element, ...) is decoded by pynetdicom, which keeps those for the log.
DIRECT_WRITE_BYTES = 1 << 20  # the direct way writes a large message in pieces of about this size
STORE_RSP_ELEMENTS = frozenset((0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x1000))
DATA_SET_PRESENT, NO_DATA_SET = 0x0001, 0x0101


def _element(element: int, value: bytes) -> bytes:
    return _TAG_LEN(0x0000, element, len(value)) + value


def uid_value(uid) -> bytes:
    """A UI value, padded to even length with NUL (PS3.5 6.2)."""
    raw = str(uid).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def command_set(elements: list[tuple[int, bytes]]) -> bytes:
    """A DIMSE command set (group 0000, implicit VR little endian, PS3.7 E.1) of (element, value bytes)
    in element order, led by its Command Group Length."""
    body = b"".join(_element(element, value) for element, value in elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def store_request(msg_id: int, sop_class: str, sop_uid: str, priority: int = 2,
                  originator_aet: str | None = None, originator_id: int | None = None) -> bytes:
    """The command set of a C-STORE-RQ with a data set (PS3.7 9.3.1.1)."""
    elements = [(0x0002, uid_value(sop_class)), (0x0100, us_value(C_STORE_RQ)), (0x0110, us_value(msg_id)),
                (0x0700, us_value(priority)), (0x0800, us_value(DATA_SET_PRESENT)), (0x1000, uid_value(sop_uid))]
    if isinstance(originator_aet, bytes):
        originator_aet = originator_aet.decode("ascii")
    if originator_aet and originator_aet.strip():
        title = originator_aet.strip().encode("ascii")
        elements.append((0x1030, title + b" " if len(title) % 2 else title))
    if originator_id is not None:
        elements.append((0x1031, us_value(originator_id)))
    return command_set(elements)


def retrieve_response(command_field: int, responding_to: int, sop_class: str, status: int, remaining: int,
                      completed: int, failed: int, warning: int) -> bytes:
    """The command set of a C-GET-RSP or C-MOVE-RSP without an identifier (PS3.7 9.3.3.2, 9.3.4.2)."""
    return command_set([(0x0002, uid_value(sop_class)), (0x0100, us_value(command_field)), (0x0120, us_value(responding_to)),
                        (0x0800, us_value(NO_DATA_SET)), (0x0900, us_value(status)), (0x1020, us_value(remaining)),
                        (0x1021, us_value(completed)), (0x1022, us_value(failed)), (0x1023, us_value(warning))])


@dataclass(frozen=True)
class SentStoreResponse:
    """What EVT_DIMSE_SENT handlers marked ``takes_sent_store_response`` get for a C-STORE-RSP sent here."""

    context_id: int
    status: int


def store_response(primitive: C_STORE) -> bytes | None:
    """The command set of the C-STORE-RSP ``primitive`` (PS3.7 9.3.1.2, as pynetdicom encodes it), or None
    when it carries more than this handles (an error comment, an offending element)."""
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None \
            or primitive.Status is None or primitive.MessageIDBeingRespondedTo is None:
        return None
    return plain_store_response(primitive.MessageIDBeingRespondedTo, primitive.AffectedSOPClassUID,
                                primitive.AffectedSOPInstanceUID, primitive.Status)


def plain_store_response(responding_to: int, sop_class, sop_uid, status: int) -> bytes:
    """The command set of a C-STORE-RSP with a status and no error comment (PS3.7 9.3.1.2)."""
    elements = [(0x0002, uid_value(sop_class))] if sop_class else []
    elements += [(0x0100, us_value(C_STORE_RSP)), (0x0120, us_value(responding_to)),
                 (0x0800, us_value(NO_DATA_SET)), (0x0900, us_value(status))]
    if sop_uid:
        elements.append((0x1000, uid_value(sop_uid)))
    return command_set(elements)


def pending_retrieve_command(primitive) -> bytes | None:
    """Our encoding of a Pending C-GET/C-MOVE-RSP primitive without identifier; None for anything else."""
    kind = type(primitive)
    if kind not in (C_GET, C_MOVE) or primitive.MessageIDBeingRespondedTo is None \
            or primitive.Status != PENDING or primitive.Identifier is not None:
        return None
    counts = (primitive.NumberOfRemainingSuboperations, primitive.NumberOfCompletedSuboperations,
              primitive.NumberOfFailedSuboperations, primitive.NumberOfWarningSuboperations)
    if any(n is None for n in counts):
        return None
    return retrieve_response(C_GET_RSP if kind is C_GET else C_MOVE_RSP, primitive.MessageIDBeingRespondedTo,
                             primitive.AffectedSOPClassUID, PENDING, *counts)


_PLAIN_RESPONSES = {C_ECHO: C_ECHO_RSP, C_GET: C_GET_RSP, C_MOVE: C_MOVE_RSP}
_SUB_OPERATION_COUNTS = ((0x1020, "NumberOfRemainingSuboperations"), (0x1021, "NumberOfCompletedSuboperations"),
                         (0x1022, "NumberOfFailedSuboperations"), (0x1023, "NumberOfWarningSuboperations"))


def plain_response_command(primitive) -> bytes | None:
    """Our encoding of a C-ECHO-RSP, or of a C-GET/C-MOVE-RSP without identifier (e.g. the final response of a
    retrieve whose sub-operations all succeeded), with no error comment: the elements pynetdicom would write,
    without its pydicom Dataset (~0.5 ms per association). None for anything else."""
    field = _PLAIN_RESPONSES.get(type(primitive))
    if field is None or primitive.MessageIDBeingRespondedTo is None or primitive.Status is None \
            or primitive.ErrorComment is not None or getattr(primitive, "Identifier", None) is not None:
        return None
    elements = [(0x0002, uid_value(primitive.AffectedSOPClassUID))] if primitive.AffectedSOPClassUID else []
    elements += [(0x0100, us_value(field)), (0x0120, us_value(primitive.MessageIDBeingRespondedTo)),
                 (0x0800, us_value(NO_DATA_SET)), (0x0900, us_value(primitive.Status))]
    if field != C_ECHO_RSP:
        elements += [(element, us_value(getattr(primitive, name))) for element, name in _SUB_OPERATION_COUNTS
                     if getattr(primitive, name) is not None]
    return command_set(elements)


def parse_store_response(command: bytes) -> tuple[int, int] | None:
    """(Message ID Being Responded To, Status) of a plain C-STORE-RSP command set; None for anything else."""
    values: dict[int, bytes] = {}
    at, end = 0, len(command)
    while at + 8 <= end:
        group, element, length = _READ_TAG_LEN(command, at)
        if group != 0 or element not in STORE_RSP_ELEMENTS or at + 8 + length > end:
            return None
        values[element] = command[at + 8:at + 8 + length]
        at += 8 + length
    if at != end or values.get(0x0100) != us_value(C_STORE_RSP) or values.get(0x0800) != us_value(NO_DATA_SET) \
            or len(values.get(0x0120, b"")) != 2 or len(values.get(0x0900, b"")) != 2:
        return None
    return int.from_bytes(values[0x0120], "little"), int.from_bytes(values[0x0900], "little")


class StoreResponseMessage:
    """What EVT_DIMSE_RECV handlers get for a C-STORE-RSP read by ``receive_store_responses``: the values
    of its command set (those handlers are marked ``command_values_only``), not a pynetdicom message."""

    def __init__(self, context_id: int, responding_to: int, status: int):
        self.context_id = context_id
        self.command_set = SimpleNamespace(CommandField=C_STORE_RSP, MessageIDBeingRespondedTo=responding_to,
                                           Status=status)


def receive_store_responses(assoc) -> None:
    """Read this association's plain C-STORE-RSPs without pynetdicom's decoding (an instance attribute).

    pynetdicom's DUL thread decodes each response's command set with pydicom and builds the primitive
    through setters that validate every UID with a regular expression: ~0.7 ms per sub-operation of a
    C-GET/C-MOVE, more than everything else the box does for it. A response in one PDV (command, last
    fragment) with a plain command set (``parse_store_response``) becomes a C_STORE primitive with its
    Message ID Being Responded To and Status, the two values a C-STORE requestor reads; anything else,
    or an EVT_DIMSE_RECV handler not marked ``command_values_only``, goes pynetdicom's way.
    """
    dimse = getattr(assoc, "dimse", None)
    original = getattr(dimse, "receive_primitive", None)
    if original is None or getattr(dimse, "_pacs_store_responses", False) or _watched(
            assoc, evt.EVT_DIMSE_RECV, "command_values_only"):
        return

    def receive_primitive(primitive) -> None:
        pdvs = primitive.presentation_data_value_list
        if dimse.message is None and len(pdvs) == 1 and pdvs[0][1][:1] == COMMAND_LAST:
            context_id, pdv = pdvs[0]
            parsed = parse_store_response(pdv[1:])
            if parsed is not None:
                rsp = C_STORE()
                rsp.MessageIDBeingRespondedTo, rsp.Status = parsed
                rsp._context_id = context_id  # as pynetdicom's message_to_primitive sets it
                evt.trigger(assoc, evt.EVT_DIMSE_RECV, {"message": StoreResponseMessage(context_id, *parsed)})
                dimse.msg_queue.put((context_id, rsp))
                return
        original(primitive)

    dimse._pacs_store_responses = True
    dimse.receive_primitive = receive_primitive
    transport = getattr(getattr(assoc, "dul", None), "socket", None)
    if callable(getattr(transport, "claim_reads", None)) and callable(getattr(dimse, "get_msg", None)) \
            and not assoc.get_handlers(evt.EVT_PDU_RECV) and not assoc.get_handlers(evt.EVT_DATA_RECV):
        dimse.get_msg = InlineResponses(assoc, transport, dimse.get_msg)


class InlineResponses:
    """Stands in for ``dimse.get_msg``: a thread waiting for the answer to its C-STORE-RQ reads it from the
    socket itself instead of waiting for the DUL thread to read it, decode it and wake it up (two thread
    hand-overs per sub-operation of a C-GET/C-MOVE, each a wake-up and a switch under the GIL).

    The waiting thread claims the socket's reads (sockets.py ``claim_reads``: only when the DUL thread is
    not reading, and has no PDU it has not handled), waits for the peer and reads one PDU. A plain
    C-STORE-RSP in one PDV (``parse_store_response``) is the answer; any other PDU (A-ABORT, A-RELEASE-RQ,
    C-CANCEL-RQ, a response in several PDVs or with an error comment) is handed to the DUL thread decoded
    as its own read would have, and the wait goes on pynetdicom's way (``get_msg``). A closed connection
    or a refused PDU is the DUL's to handle too (its abort puts (None, None) on the DIMSE queue that
    ``get_msg`` waits on). No answer within the DIMSE timeout: (None, None), as ``get_msg``. No claim
    (TLS, another reader, not Sta6, a message half assembled): pynetdicom's way.

    The sender claims before its C-STORE-RQ leaves (``claim_ahead``): claimed only once it waits, the
    claim lost nearly every race, since the answer came while the next object was being decrypted
    and the DUL thread, watching the socket, read it first (bench/README.md, session 7).
    """

    def __init__(self, assoc, transport, get_msg):
        self.assoc, self.transport, self.get_msg = assoc, transport, get_msg
        self.held = False  # claimed ahead by the sender of a C-STORE-RQ, not yet read or dropped

    def __call__(self, block: bool = False):
        if block:
            answer = self._read()
            if answer is not None:
                return answer
        return self.get_msg(block)

    def claim_ahead(self) -> None:
        """Just before a C-STORE-RQ leaves: claim the reads, so that its answer is read by this thread."""
        if not self.held and self._may_claim() and self.transport.claim_reads():
            self.held = True

    def drop(self) -> None:
        """Give up a claim taken ahead that no read used (the send failed): the DUL thread reads again now."""
        if self.held:
            self.held = False
            self.transport.release_reads(wake=True)

    def _may_claim(self) -> bool:
        assoc = self.assoc
        dimse = assoc.dimse
        return dimse.message is None and dimse.msg_queue.empty() and assoc.is_established \
            and assoc.dul.state_machine.current_state == "Sta6"

    def _read(self):
        assoc, transport = self.assoc, self.transport
        dimse, dul = assoc.dimse, assoc.dul
        if not self.held and not (self._may_claim() and transport.claim_reads()):
            return None
        self.held = False  # released below, whatever comes
        handed = True
        try:
            ready = transport.wait_readable(dimse.dimse_timeout if dimse.dimse_timeout is not None else 1e9)
            if ready is False:  # no answer within the DIMSE timeout, as pynetdicom's wait
                return None, None
            pdu = transport.read_pdu() if ready else None
            if pdu is None:  # closed (the DUL closed it, or was told): its abort answers pynetdicom's wait
                return None
            answer = store_response_pdu(pdu)
            if answer is None:
                transport.hand_over(pdu)
                return None
            context_id, responding_to, status = answer
            handed = False
        finally:
            transport.release_reads(wake=handed)
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo, rsp.Status = responding_to, status
        rsp._context_id = context_id
        on_put = getattr(dimse.msg_queue, "on_put", None)  # a whole message: progress for the idle timer
        if on_put is not None:
            on_put()
        else:
            dul._idle_timer.restart()
        evt.trigger(assoc, evt.EVT_DIMSE_RECV, {"message": StoreResponseMessage(context_id, responding_to, status)})
        return context_id, rsp


def store_response_pdu(pdu: bytes) -> tuple[int, int, int] | None:
    """(context ID, Message ID Being Responded To, Status) of a P-DATA-TF PDU holding exactly one PDV, the
    last fragment of a plain C-STORE-RSP command set; None for any other PDU."""
    if len(pdu) < 12 or pdu[0] != 0x04:
        return None
    length = int.from_bytes(pdu[6:10], "big")
    if length < 2 or 10 + length != len(pdu) or pdu[11:12] != COMMAND_LAST:
        return None
    parsed = parse_store_response(bytes(pdu[12:]))
    return None if parsed is None else (pdu[10], *parsed)


def _watched(assoc, event, flag: str = "ignores_pending_find") -> bool:
    """A handler that wants to see every ``event`` (pynetdicom's debug log); the association log's C-STORE
    tally, marked ``ignores_pending_find``, only looks at C-STORE-RSPs, which never go out here."""
    return any(not getattr(handler, flag, False) for handler, _args in assoc.get_handlers(event))


class Outbound:
    """The way whole DIMSE messages leave one association: direct writes or the DUL's queue (see above).
    ``install`` (at connection open, ``on_connection_open``) makes it the association's ``dimse.send_msg``."""

    def __init__(self, assoc, direct=None):
        self.assoc = assoc
        self.dul = assoc.dul
        self.dimse = assoc.dimse
        self.direct = direct  # TunedAssociationSocket.send_direct, or None: queued
        self._held: list[bytes] = []  # PDUs of a Pending C-GET-RSP that go out with the next message
        self._lock = threading.Lock()  # one message at a time, whichever thread sends it
        watchers = assoc.get_handlers(evt.EVT_DIMSE_SENT)
        self._store_watched = bool(watchers)  # they get a SentStoreResponse for each C-STORE-RSP sent here
        # C-STORE-RSPs are encoded here when written directly and every watcher takes a SentStoreResponse
        self._store_responses = direct is not None and not _watched(assoc, evt.EVT_DIMSE_SENT,
                                                                    "takes_sent_store_response")
        self._pynetdicom_send = None  # the association's own send_msg, once installed
        self.before_store_response = None  # inline_store.InlineStores.claim_ahead, when installed
        self._rewatch = getattr(getattr(self.dul, "socket", None), "rewatch", None)

    @classmethod
    def for_assoc(cls, assoc) -> Outbound | None:
        dul, dimse = getattr(assoc, "dul", None), getattr(assoc, "dimse", None)
        if not callable(getattr(dul, "send_pdu", None)) or dimse is None or _watched(assoc, evt.EVT_DIMSE_SENT):
            return None
        installed = getattr(dimse, "_pacs_outbound", None)
        if isinstance(installed, cls):
            return installed
        transport = getattr(dul, "socket", None)
        direct = getattr(transport, "send_direct", None)
        if getattr(transport, "send_lock", None) is None \
                or isinstance(getattr(transport, "socket", None), ssl.SSLSocket) \
                or assoc.get_handlers(evt.EVT_PDU_SENT) or assoc.get_handlers(evt.EVT_DATA_SENT):
            direct = None
        return cls(assoc, direct)

    def send(self, context_id: int, command: bytes, dataset=None, hold: bool = False) -> bool:
        """One message: ``command`` (an encoded command set), then ``dataset`` (bytes or a memoryview of the
        data set in the context's transfer syntax) if given. False once the association is gone.
        ``hold``: the direct way keeps the PDUs and writes them with the next message (one write)."""
        max_pdu = self.dimse.maximum_pdu_size
        pdvs = fragments(command, max_pdu, COMMAND_MORE, COMMAND_LAST)
        if dataset is not None:
            pdvs = itertools.chain(pdvs, fragments(dataset, max_pdu, DATA_MORE, DATA_LAST))
        return self._send_pdvs(context_id, pdvs, max_pdu, hold)

    def _send_pdvs(self, context_id: int, pdvs, max_pdu: int, hold: bool = False) -> bool:
        if self.direct is not None:
            with self._lock:
                if hold:
                    self._held += [encode_pdu(context_id, group) for group in pack(pdvs, max_pdu)]
                    return True
                queue = getattr(self.dul, "to_provider_queue", None)  # what pynetdicom queued goes out first
                while queue is not None and not queue.empty() and self.assoc.is_established:
                    time.sleep(0.0005)
                # Written DIRECT_WRITE_BYTES at a time: a large object is never copied whole into PDUs
                batch, self._held = self._held, []
                size = sum(map(len, batch))
                for group in pack(pdvs, max_pdu):
                    pdu = encode_pdu(context_id, group)
                    batch.append(pdu)
                    size += len(pdu)
                    if size >= DIRECT_WRITE_BYTES:
                        if not (self.assoc.is_established and self.direct(b"".join(batch))):
                            return False
                        batch, size = [], 0
                return not batch or (self.assoc.is_established and self.direct(b"".join(batch)))
        queue = getattr(self.dul, "to_provider_queue", None)
        for group in pack(pdvs, max_pdu):
            while queue is not None and queue.qsize() >= MAX_QUEUED_PDUS and self.assoc.is_established:
                time.sleep(0.001)  # the DUL thread sends them: a large object is not queued whole
            if not self.assoc.is_established:
                return False
            primitive = P_DATA()
            for pdv in group:
                primitive.presentation_data_value_list.append((context_id, bytes(pdv)))
            self.dul.send_pdu(primitive)
        return True

    @property
    def encodes_store_responses(self) -> bool:
        """C-STORE-RSPs are encoded and written here (a tuned plain TCP connection, no handler wanting
        pynetdicom's sent messages)."""
        return self._store_responses

    def send_store_response(self, context_id: int, responding_to: int, sop_class: str, sop_uid: str,
                            status: int) -> bool:
        """A plain C-STORE-RSP (inline_store.py), as ``send_msg`` sends one; False if the connection is gone."""
        if self._store_watched:  # the association log's tally
            evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": SentStoreResponse(context_id, status)})
        if self.before_store_response is not None:
            self.before_store_response()
        return self.send(context_id, plain_store_response(responding_to, sop_class, sop_uid, status))

    def install(self) -> None:
        """Send this association's DIMSE messages (``dimse.send_msg``, an instance attribute) through here."""
        if getattr(self.dimse, "_pacs_outbound", None) is not None or not callable(getattr(self.dimse, "send_msg",
                                                                                           None)):
            return
        self._pynetdicom_send = self.dimse.send_msg
        self.dimse._pacs_outbound = self
        self.dimse.send_msg = self.send_msg

    def send_msg(self, primitive, context_id: int) -> None:
        """A C-STORE-RSP or Pending C-GET/C-MOVE-RSP encoded here; any other message encoded by pynetdicom;
        all by the same way out, in the order they are sent."""
        kind = type(primitive)
        if kind is C_STORE:
            if self.before_store_response is not None and primitive.MessageIDBeingRespondedTo is not None:
                self.before_store_response()  # a storage SCP's answer: the sender's next request comes next
            if self._store_responses and primitive.MessageIDBeingRespondedTo is not None:
                command = store_response(primitive)
                if command is not None:
                    if self._store_watched:  # the association log's tally
                        evt.trigger(self.assoc, evt.EVT_DIMSE_SENT,
                                    {"message": SentStoreResponse(context_id, primitive.Status)})
                    self.send(context_id, command)  # False: the connection is gone, and the DUL was told
                    return
        elif kind is C_GET or kind is C_MOVE:
            command = pending_retrieve_command(primitive)
            if command is not None:
                # A Pending C-GET-RSP sent by the C-GET's own thread is followed at once by the next C-STORE-RQ
                # or the final response on this association: they leave together (one write, one wake-up for
                # the peer). Anything else, e.g. the C-MOVE wake-up from another thread, leaves now.
                self.send(context_id, command, hold=kind is C_GET and threading.current_thread() is self.assoc)
                return
        if self.direct is None:
            self._pynetdicom_send(primitive, context_id)
        elif self._store_responses and (command := plain_response_command(primitive)) is not None:
            self.send(context_id, command)  # no EVT_DIMSE_SENT: its watchers only tally C-STORE-RSPs (above)
        else:
            self._send_encoded(primitive, context_id)
        if self._rewatch is not None:  # e.g. a C-GET's final response: the peer's release comes next
            self._rewatch()

    def _send_encoded(self, primitive, context_id: int) -> None:
        """pynetdicom's ``send_msg`` (its encoding, its EVT_DIMSE_SENT), written by the direct way."""
        from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE

        table = _RQ_TO_MESSAGE if primitive.MessageIDBeingRespondedTo is None else _RSP_TO_MESSAGE
        message = table[primitive.__class__]()
        message.primitive_to_message(primitive)
        message.context_id = context_id
        evt.trigger(self.assoc, evt.EVT_DIMSE_SENT, {"message": message})
        max_pdu = self.dimse.maximum_pdu_size
        pdvs = [pdv for pdata in message.encode_msg(context_id, max_pdu)
                for _cx, pdv in pdata.presentation_data_value_list]
        self._send_pdvs(context_id, pdvs, max_pdu)


def on_connection_open(event) -> None:
    """EVT_CONN_OPEN handler (bound after sockets.tune_accepted_socket, whose socket it writes to): this
    association's DIMSE messages leave through an ``Outbound``, unless a handler watches every one."""
    outbound = Outbound.for_assoc(event.assoc)
    if outbound is not None:
        outbound.install()
