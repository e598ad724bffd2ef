"""C-STOREs read, reassembled and answered by the association thread alone (issue 18).

pynetdicom receives a C-STORE on two threads: the DUL thread decodes each P-DATA-TF PDU into PDV
objects, runs its state machine, reassembles the DIMSE message, decodes the command set into a
pydicom Dataset and fills a C_STORE primitive (validating every UID with a regular expression);
the association thread then takes it off a queue and runs the service class, which builds an
Event for the handler. That was the largest block of Python per stored instance left, plus two
thread hand-overs (bench/README.md, sessions 5-7).

``InlineStores`` stands in for an acceptor's ``dimse.get_msg``. When the association's reactor
looks for its next message and none is queued, the association thread claims the socket's reads
(sockets.py ``claim_reads``: not while the DUL thread reads or holds a PDU it has not handled, nor
while a message is half assembled, a release/abort indication waits, or another thread paused the
reactor), reads PDUs with the tuned socket's limits and deadline (``read_pdu``) and reassembles one
message from them. A plain C-STORE-RQ (``parse_store_request``: only the elements of PS3.7
9.3.1.1, standard UIDs, priority 0-2) with its data set, in PDVs of one accepted context whose
abstract syntax is the request's SOP class and whose service is storage, ending exactly at a PDU's
end, is served here: the claim is released (during the store the DUL thread reads, so an abort or
release is handled as before), the handler's ``received`` form (store.py) runs on the data set's
fragments as received, and a plain status goes out encoded by ``Outbound.send_store_response``; a
status with an error comment, or a handler exception (0xC211), goes through pynetdicom's
``validate_status`` and ``send_msg`` as its StorageServiceClass would send it. Then the thread
claims again for the next message.

Anything else (another PDU type, another DIMSE message, C-CANCEL, an unaccepted context, malformed
or interleaved PDVs, PDVs after a message's end) is handed to the DUL thread, every PDU read for
that message in order, decoded as its own read would have (``hand_over``), and the claim released:
pynetdicom serves it exactly as before. A refused or closed read is the DUL's too (``read_pdu``
queues its event after handing over the message's earlier PDUs). Progress for the idle timer is as
on the DUL: bytes per PDU (``_ProgressTimer.restart``) and a whole message. Waiting for the peer is
done in slices (CLAIM_SLICE), idle or between PDUs: after each the reads are kept unless the reactor
must act (``_may_read``: idle timeout, a release or abort indication, paused by another thread, ended).

Installed at connection open (``on_connection_open``, after sockets.py and outbound.py) only for an
acceptor on a tuned plain TCP socket whose C-STORE-RSPs ``Outbound`` encodes, whose C-STORE handler
has a ``received`` form, with no handler watching every PDU or data received and only
``command_values_only`` EVT_DIMSE_RECV handlers (they get a ``StoreRequestMessage``). TLS, pynetdicom's
debug logging or any other handler keeps pynetdicom's way.
"""
from __future__ import annotations

import logging
import re
import struct
import threading
from dataclasses import dataclass
from types import SimpleNamespace

from pynetdicom import _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from .outbound import C_STORE_RQ, NO_DATA_SET, _watched, us_value
from .sockets import CLAIM_SLICE
from .store import ReceivedStore

log = logging.getLogger(__name__)
_READ_TAG_LEN = struct.Struct("<HHI").unpack_from
# The elements of a plain C-STORE-RQ (PS3.7 9.3.1.1), in the order they must come
STORE_RQ_ELEMENTS = frozenset((0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031))
_UID = re.compile(r"(0|[1-9][0-9]{0,63})(\.(0|[1-9][0-9]{0,63}))*")
_AE = re.compile(r"[\x21-\x5b\x5d-\x7e](?:[\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?")  # 1-16, no \
HANDLER_EXCEPTION = 0xC211  # pynetdicom's status for an exception in an EVT_C_STORE handler


@dataclass(frozen=True)
class StoreRequest:
    """The command values of a plain C-STORE-RQ."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    move_originator_aet: str | None = None
    move_originator_id: int | None = None


def _us(raw: bytes | None) -> int | None:
    return int.from_bytes(raw, "little") if raw is not None and len(raw) == 2 else None


def _uid(raw: bytes | None) -> str | None:
    """A UI value as pydicom reads it (trailing NUL and spaces dropped), if it is a plain UID of 1-64 characters."""
    if raw is None:
        return None
    value = raw.rstrip(b"\0 ")
    if not 0 < len(value) <= 64:
        return None
    text = value.decode("latin-1")
    return text if _UID.fullmatch(text) else None


def parse_store_request(command: bytes) -> StoreRequest | None:
    """The values of a C-STORE-RQ command set (implicit VR little endian) with a data set, holding only its
    standard elements, each once, in order, with a right group length; None for anything else."""
    values: dict[int, bytes] = {}
    at, end, last = 0, len(command), -1
    while at < end:
        if at + 8 > end:
            return None
        group, element, length = _READ_TAG_LEN(command, at)
        if group or element <= last or element not in STORE_RQ_ELEMENTS or at + 8 + length > end:
            return None
        values[element] = command[at + 8:at + 8 + length]
        last, at = element, at + 8 + length
    group_length = values.get(0x0000)
    if group_length is None or len(group_length) != 4 or int.from_bytes(group_length, "little") != end - 12:
        return None
    data_set_type = values.get(0x0800)
    if values.get(0x0100) != us_value(C_STORE_RQ) or data_set_type is None or len(data_set_type) != 2 \
            or data_set_type == us_value(NO_DATA_SET):
        return None
    message_id, priority = _us(values.get(0x0110)), _us(values.get(0x0700))
    sop_class, sop_uid = _uid(values.get(0x0002)), _uid(values.get(0x1000))
    if message_id is None or priority not in (0, 1, 2) or sop_class is None or sop_uid is None:
        return None
    aet = originator_id = None
    if 0x1030 in values:
        aet = values[0x1030].decode("latin-1").strip(" ")
        if not _AE.fullmatch(aet):
            return None
    if 0x1031 in values:
        originator_id = _us(values[0x1031])
        if originator_id is None:
            return None
    return StoreRequest(message_id, sop_class, sop_uid, priority, aet, originator_id)


class _Message:
    """The PDVs of one DIMSE message as they arrive, checked as a plain C-STORE-RQ with a data set."""

    __slots__ = ("context_id", "command", "request", "data", "complete")

    def __init__(self) -> None:
        self.context_id: int | None = None
        self.command: list[memoryview] = []
        self.request: StoreRequest | None = None
        self.data: list[memoryview] = []
        self.complete = False

    def feed(self, pdu: bytearray) -> bool:
        """Take the PDVs of one PDU; False when it is not a P-DATA-TF or does not continue this message as
        a plain C-STORE-RQ (then pynetdicom must have it)."""
        end = len(pdu)
        if pdu[0] != 0x04 or end < 12:
            return False
        view, at = memoryview(pdu), 6
        while at < end:
            if self.complete or at + 6 > end:
                return False  # PDVs after the message's end, or a truncated item
            length = int.from_bytes(pdu[at:at + 4], "big")
            context_id, header = pdu[at + 4], pdu[at + 5]
            if length < 2 or at + 4 + length > end or header > 3:
                return False
            if self.context_id is None:
                self.context_id = context_id
            elif context_id != self.context_id:
                return False
            fragment = view[at + 6:at + 4 + length]
            if self.request is None:
                if not header & 1:
                    return False  # data before the command set ended
                self.command.append(fragment)
                if header & 2:
                    self.request = parse_store_request(b"".join(self.command))
                    if self.request is None:
                        return False
            else:
                if header & 1:
                    return False
                self.data.append(fragment)
                self.complete = bool(header & 2)
            at += 4 + length
        return True


class StoreRequestMessage:
    """What EVT_DIMSE_RECV handlers (``command_values_only``) get for a C-STORE-RQ read here."""

    def __init__(self, context_id: int, request: StoreRequest):
        self.context_id = context_id
        self.command_set = SimpleNamespace(CommandField=C_STORE_RQ, MessageID=request.message_id,
                                           AffectedSOPClassUID=request.sop_class_uid,
                                           AffectedSOPInstanceUID=request.sop_instance_uid, Priority=request.priority)


class InlineStores:
    """Stands in for an acceptor's ``dimse.get_msg`` (see the module docstring)."""

    def __init__(self, assoc, transport, outbound, handler, args, get_msg):
        self.assoc, self.transport, self.outbound = assoc, transport, outbound
        self.handler, self.args, self.get_msg = handler, tuple(args), get_msg
        self._contexts: dict[int, tuple[str, str] | None] = {}  # context ID -> (abstract, transfer syntax)
        self.held = False  # the association thread holds the socket's reads (claimed ahead of a response)
        self.served = 0  # C-STOREs served here (tests)

    def __call__(self, block: bool = False):
        if block or threading.current_thread() is not self.assoc:
            return self.get_msg(block)
        answer = self.get_msg(False)
        if answer[1] is None and self._may_read():
            try:
                self._serve()
            except Exception:  # noqa: BLE001 - as pynetdicom's _serve_request: log, then abort the association
                log.exception("Reading a C-STORE on the association thread failed; aborting the association")
                self.drop()
                self.assoc.abort()
        else:
            self.drop()
        return answer

    def claim_ahead(self) -> None:
        """Before the association thread writes a C-STORE-RSP (Outbound): claim the reads now, while the
        sender waits for it, so that its next request is read here and not by the DUL thread."""
        if not self.held and threading.current_thread() is self.assoc and self._may_read() \
                and self.transport.claim_reads():
            self.held = True

    def drop(self) -> None:
        """Give up a held claim: the DUL thread reads again at once."""
        if self.held:
            self.held = False
            self.transport.release_reads(wake=True)

    def _may_read(self) -> bool:
        """Nothing for the reactor or the DUL thread to do first, and the reactor not paused by another thread."""
        assoc, dimse, dul = self.assoc, self.assoc.dimse, self.assoc.dul
        return assoc.is_established and not assoc._kill and not getattr(assoc, "_sent_release", False) \
            and assoc._reactor_checkpoint.is_set() and dimse.message is None and dimse.msg_queue.empty() \
            and dul.to_user_queue.empty() and dul.is_alive() and not dul.idle_timer_expired() \
            and dul.state_machine.current_state == "Sta6"

    def _serve(self) -> None:
        """Serve C-STOREs while they come as plain ones; return when anything else is for pynetdicom."""
        transport = self.transport
        while True:
            if not self.held:
                if not transport.claim_reads():
                    return
                self.held = True
            if not self._may_read():  # re-checked under the claim: the DUL thread may have just handled a PDU
                self.drop()
                return
            message = self._read_message()  # releases the claim
            if message is None:
                return
            self._store(message)  # claims again before its response goes out (claim_ahead)

    def _read_message(self) -> _Message | None:
        """One whole plain C-STORE-RQ, or None (nothing came within a slice, or what came is pynetdicom's).
        Releases the claim: during the store the DUL thread reads what else the peer may send."""
        transport, dul = self.transport, self.assoc.dul
        message, pdus = _Message(), []
        wake = True

        def hand_over() -> None:
            for pdu in pdus:
                transport.hand_over(pdu)
            pdus.clear()

        try:
            while True:
                ready = transport.wait_readable(CLAIM_SLICE)
                if ready is None:
                    return None  # closed meanwhile: the DUL's to handle
                if not ready:
                    if self._may_read():
                        continue  # nothing for the reactor to do: keep the reads (idle, or between PDUs)
                    hand_over()  # the reactor must act (idle timeout, paused, ended): pynetdicom's way
                    return None
                pdu = transport.read_pdu(hand_over)
                if pdu is None:
                    return None
                dul._idle_timer.restart()  # as the DUL's read: bytes received count as progress
                pdus.append(pdu)
                if not message.feed(pdu) or (message.request is not None and self._context(message) is None):
                    hand_over()
                    return None
                if message.complete:
                    wake = False
                    return message
        finally:
            self.held = False
            transport.release_reads(wake=wake)

    def _context(self, message: _Message) -> tuple[str, str] | None:
        """(abstract syntax, transfer syntax) of the message's context, if it is accepted, names the request's
        SOP class and is served by pynetdicom's StorageServiceClass; None otherwise."""
        context_id = message.context_id
        if context_id not in self._contexts:
            self._contexts[context_id] = self._lookup(context_id)
        found = self._contexts[context_id]
        return found if found is not None and found[0] == message.request.sop_class_uid else None

    def _lookup(self, context_id: int) -> tuple[str, str] | None:
        assoc = self.assoc
        cx = assoc._accepted_cx.get(context_id)
        if cx is None or not cx.transfer_syntax:
            return None
        abstract = str(cx.abstract_syntax)
        if not _config.UNRESTRICTED_STORAGE_SERVICE:  # as _serve_request picks the service class
            class_uid = assoc.acceptor.accepted_common_extended.get(abstract, (abstract,))[0]
            try:
                if uid_to_service_class(class_uid) is not StorageServiceClass:
                    return None
            except Exception:  # noqa: BLE001 - pynetdicom decides what an unknown class means
                return None
        return abstract, str(cx.transfer_syntax[0])

    def _store(self, message: _Message) -> None:
        """Run the store handler on the message and answer it, as pynetdicom's StorageServiceClass.SCP."""
        assoc, dimse = self.assoc, self.assoc.dimse
        request, context_id = message.request, message.context_id
        abstract, transfer_syntax = self._contexts[context_id]
        on_put = getattr(dimse.msg_queue, "on_put", None)  # a whole message: progress for the idle timer
        if on_put is not None:
            on_put()
        else:
            assoc.dul._idle_timer.restart()
        evt.trigger(assoc, evt.EVT_DIMSE_RECV, {"message": StoreRequestMessage(context_id, request)})
        received = ReceivedStore(request.sop_class_uid, request.sop_instance_uid, transfer_syntax, message.data)
        self.served += 1
        dimse.cancel_req = {}
        assoc._is_paused = True  # as _serve_request: another thread's send_* may go ahead
        try:
            try:
                status = self.handler(assoc, received, *self.args)
                failed = False
            except Exception as exc:  # noqa: BLE001 - as pynetdicom's ``attempt``: logged, answered 0xC211
                log.error("Exception in handler bound to 'evt.EVT_C_STORE'")
                log.exception(exc)
                status, failed = HANDLER_EXCEPTION, True
            if not failed and not assoc.is_established:
                return  # aborted or released meanwhile: pynetdicom sends nothing either
            if type(status) is int and status in StorageServiceClass.statuses:
                self.outbound.send_store_response(context_id, request.message_id, request.sop_class_uid,
                                                  request.sop_instance_uid, status)
                return
            rsp = C_STORE()  # a refusal with its reason: pynetdicom's primitive, status check and encoding
            rsp.MessageID = rsp.MessageIDBeingRespondedTo = request.message_id
            rsp.AffectedSOPInstanceUID = request.sop_instance_uid
            rsp.AffectedSOPClassUID = request.sop_class_uid
            rsp = StorageServiceClass(assoc).validate_status(status, rsp)
            dimse.send_msg(rsp, context_id)
        finally:
            assoc._is_paused = False
            dimse.cancel_req = {}


def on_connection_open(event) -> None:
    """EVT_CONN_OPEN handler (after sockets.tune_accepted_socket and outbound.on_connection_open): an
    acceptor's plain C-STOREs are read and answered by its association thread (``InlineStores``)."""
    assoc = event.assoc
    dimse, dul = getattr(assoc, "dimse", None), getattr(assoc, "dul", None)
    transport = getattr(dul, "socket", None)
    outbound = getattr(dimse, "_pacs_outbound", None)
    if not assoc.is_acceptor or not isinstance(assoc, threading.Thread) \
            or getattr(transport, "_claim", None) is None or outbound is None \
            or not outbound.encodes_store_responses or isinstance(getattr(dimse, "get_msg", None), InlineStores) \
            or assoc.get_handlers(evt.EVT_PDU_RECV) or assoc.get_handlers(evt.EVT_DATA_RECV) \
            or _watched(assoc, evt.EVT_DIMSE_RECV, "command_values_only"):
        return
    handler, args = assoc.get_handlers(evt.EVT_C_STORE) or (None, None)
    received = getattr(handler, "received", None)
    if not callable(received) or not callable(getattr(transport, "read_pdu", None)):
        return
    inline = InlineStores(assoc, transport, outbound, received, args or (), dimse.get_msg)
    dimse.get_msg = inline
    outbound.before_store_response = inline.claim_ahead
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if hasattr(type(checkpoint), "reads_held"):  # sockets._MessageWaitCheckpoint: no wait while reads are held
        checkpoint.reads_held = inline
