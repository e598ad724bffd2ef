"""outbound.py and the in-memory C-STORE of scu.py: the bytes pynetdicom would send, in whole PDUs."""
from __future__ import annotations

import struct
import threading
from io import BytesIO
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import evt
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_ECHO_RSP, C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_CANCEL, C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

from appliance.dicom.outbound import (InlineResponses, Outbound, StoreResponseMessage, parse_store_response,
                                      pending_retrieve_command, plain_response_command, receive_store_responses,
                                      retrieve_response,
                                      on_connection_open, store_request, store_response_pdu)
from appliance.dicom.scu import Outgoing, chain, dataset_offset

CT = "1.2.840.10008.5.1.4.1.1.2"
GET_MODEL, MOVE_MODEL = "1.2.840.10008.5.1.4.1.2.2.3", "1.2.840.10008.5.1.4.1.2.2.2"


def pynetdicom_command(message_class, primitive) -> bytes:
    message = message_class()
    message.primitive_to_message(primitive)
    return encode(message.command_set, True, True)


@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths (UI padding)
@pytest.mark.parametrize("originator", [(None, None), ("MOVER", 17), ("ABCDEFGHIJKLMNOP", 65535)])
def test_store_request_matches_pynetdicom(sop_uid, originator):
    req = C_STORE()
    req.MessageID, req.Priority = 7, 2
    req.AffectedSOPClassUID, req.AffectedSOPInstanceUID = CT, sop_uid
    req.MoveOriginatorApplicationEntityTitle, req.MoveOriginatorMessageID = originator
    req.DataSet = BytesIO(b"\0\0")
    assert store_request(7, CT, sop_uid, 2, *originator) == pynetdicom_command(C_STORE_RQ, req)


@pytest.mark.parametrize("primitive_class,message_class,model", [(C_GET, C_GET_RSP, GET_MODEL),
                                                                  (C_MOVE, C_MOVE_RSP, MOVE_MODEL)])
def test_pending_retrieve_response_matches_pynetdicom(primitive_class, message_class, model):
    rsp = primitive_class()
    rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID, rsp.Status = 3, model, 0xFF00
    rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations = 97, 2
    rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations = 1, 0
    assert pending_retrieve_command(rsp) == pynetdicom_command(message_class, rsp)
    field = 0x8010 if primitive_class is C_GET else 0x8021
    assert retrieve_response(field, 3, model, 0xFF00, 97, 2, 1, 0) == pynetdicom_command(message_class, rsp)


def test_only_pending_retrieve_responses_are_encoded_here():
    final = C_GET()
    final.MessageIDBeingRespondedTo, final.AffectedSOPClassUID, final.Status = 3, GET_MODEL, 0x0000
    assert pending_retrieve_command(final) is None  # the final response (and its identifier) stays pynetdicom's
    find = C_FIND()
    find.MessageIDBeingRespondedTo, find.AffectedSOPClassUID, find.Status = 3, GET_MODEL, 0xFF00
    assert pending_retrieve_command(find) is None
    request = C_MOVE()
    request.MessageID, request.AffectedSOPClassUID = 3, MOVE_MODEL
    assert pending_retrieve_command(request) is None


def final_retrieve(primitive_class, model, status, counts):
    rsp = primitive_class()
    rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID, rsp.Status = 5, model, status
    (rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations,
     rsp.NumberOfWarningSuboperations) = counts
    return rsp


@pytest.mark.parametrize("primitive_class,message_class,model", [(C_GET, C_GET_RSP, GET_MODEL),
                                                                  (C_MOVE, C_MOVE_RSP, MOVE_MODEL)])
@pytest.mark.parametrize("status,counts", [(0x0000, (None, 100, 0, 0)), (0xB000, (None, 98, 0, 2)),
                                           (0xFE00, (3, 97, 0, 0)), (0xFF00, (99, 1, 0, 0)), (0x0000, (0, 0, 0, 0))])
def test_plain_retrieve_responses_match_pynetdicom(primitive_class, message_class, model, status, counts):
    rsp = final_retrieve(primitive_class, model, status, counts)
    assert plain_response_command(rsp) == pynetdicom_command(message_class, rsp)


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.1.1", None])
@pytest.mark.parametrize("status", [0x0000, 0x0122])
def test_plain_echo_responses_match_pynetdicom(sop_class, status):
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 65535, status
    if sop_class:
        rsp.AffectedSOPClassUID = sop_class
    assert plain_response_command(rsp) == pynetdicom_command(C_ECHO_RSP, rsp)


def test_responses_with_an_identifier_or_a_comment_stay_pynetdicoms():
    failed = final_retrieve(C_GET, GET_MODEL, 0xA702, (None, 1, 1, 0))
    failed.Identifier = BytesIO(b"\x08\x00\x58\x11\x00\x00\x00\x00")
    assert plain_response_command(failed) is None
    commented = final_retrieve(C_MOVE, MOVE_MODEL, 0xA801, (None, 0, 0, 0))
    commented.ErrorComment = "unknown destination"
    assert plain_response_command(commented) is None
    find = C_FIND()
    find.MessageIDBeingRespondedTo, find.AffectedSOPClassUID, find.Status = 3, GET_MODEL, 0x0000
    assert plain_response_command(find) is None
    request = C_ECHO()
    request.MessageID = 1
    assert plain_response_command(request) is None


def test_dataset_offset_matches_pydicom(tmp_path):
    path = get_testdata_file("CT_small.dcm")
    data = open(path, "rb").read()
    fh = BytesIO(data)
    pydicom.filereader.read_preamble(fh, False)
    pydicom.filereader._read_file_meta_info(fh)
    assert dataset_offset(data) == fh.tell()
    assert dataset_offset(b"\0" * 200) is None  # no DICM
    assert dataset_offset(data[:140]) is None
    assert dataset_offset(data[:dataset_offset(data) - 1]) is None  # the meta runs past the end


def test_chain_links_each_placeholder_to_the_next():
    outs = chain([Outgoing(CT, f"1.2.{i}", f"{i:02x}", "1.2.840.10008.1.2.1") for i in range(3)])
    assert [o.__dict__.get("following") for o in outs] == [outs[1], outs[2], None]


class FakeDirect:
    def __init__(self):
        self.writes: list[bytes] = []

    def __call__(self, data: bytes) -> bool:
        self.writes.append(bytes(data))
        return True


def fake_assoc(max_pdu: int, thread=None):
    sent: list[P_DATA] = []
    dul = SimpleNamespace(send_pdu=sent.append, to_provider_queue=None)
    dimse = SimpleNamespace(maximum_pdu_size=max_pdu, send_msg=lambda primitive, cx: None)
    assoc = thread or SimpleNamespace()
    assoc.dul, assoc.dimse, assoc.is_established = dul, dimse, True
    assoc.get_handlers = lambda event: []
    return assoc, sent


def parse_pdus(stream: bytes, max_pdu: int) -> list[tuple[int, int, bytes]]:
    """(context ID, message control header, fragment) of every PDV in a stream of P-DATA-TF PDUs."""
    pdvs, at = [], 0
    while at < len(stream):
        kind, _, length = struct.unpack(">BBI", stream[at:at + 6])
        assert kind == 0x04 and length <= max_pdu
        body, at = stream[at + 6:at + 6 + length], at + 6 + length
        i = 0
        while i < len(body):
            item_length, context_id = struct.unpack(">IB", body[i:i + 5])
            pdvs.append((context_id, body[i + 5], body[i + 6:i + 4 + item_length]))
            i += 4 + item_length
    return pdvs


def message_from(pdvs) -> tuple[bytes, bytes]:
    command = b"".join(fragment for _cx, header, fragment in pdvs if header & 1)
    data = b"".join(fragment for _cx, header, fragment in pdvs if not header & 1)
    assert [h & 2 for _cx, h, _f in pdvs if h & 1][-1] and [h & 2 for _cx, h, _f in pdvs if not h & 1][-1]
    return command, data


@pytest.mark.parametrize("max_pdu", [0, 4096, 16384])
def test_direct_c_store_carries_the_command_and_data_set_within_the_peer_pdu_length(max_pdu):
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    dataset = memoryview(data)[dataset_offset(data):]
    command = store_request(5, CT, "1.2.3.4")
    assoc, queued = fake_assoc(max_pdu)
    direct = FakeDirect()
    assert Outbound(assoc, direct).send(9, command, dataset)
    assert not queued and len(direct.writes) == 1  # one write for the whole message
    pdvs = parse_pdus(direct.writes[0], max_pdu or 1 << 31)
    assert {cx for cx, _h, _f in pdvs} == {9}
    assert message_from(pdvs) == (command, bytes(dataset))


def test_a_large_data_set_is_written_in_pieces_never_whole():
    from appliance.dicom.outbound import DIRECT_WRITE_BYTES

    dataset = bytes(range(256)) * (3 * DIRECT_WRITE_BYTES // 256 + 7)
    command = store_request(5, CT, "1.2.3.4")
    assoc, _queued = fake_assoc(16384)
    direct = FakeDirect()
    assert Outbound(assoc, direct).send(9, command, dataset)
    assert len(direct.writes) == 4 and max(map(len, direct.writes)) < DIRECT_WRITE_BYTES + 16384
    assert message_from(parse_pdus(b"".join(direct.writes), 16384)) == (command, dataset)


def test_queued_c_store_gives_the_dul_the_same_pdvs():
    data = open(get_testdata_file("CT_small.dcm"), "rb").read()
    dataset = memoryview(data)[dataset_offset(data):]
    command = store_request(5, CT, "1.2.3.4")
    assoc, queued = fake_assoc(4096)
    assert Outbound(assoc, None).send(9, command, dataset)
    pdvs = [(cx, pdv[0], pdv[1:]) for primitive in queued for cx, pdv in primitive.presentation_data_value_list]
    assert all(sum(len(pdv) + 5 for _cx, pdv in p.presentation_data_value_list) <= 4096 for p in queued)
    assert message_from(pdvs) == (command, bytes(dataset))


def pending_get(remaining: int) -> C_GET:
    rsp = C_GET()
    rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID, rsp.Status = 3, GET_MODEL, 0xFF00
    rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations = remaining, 1
    rsp.NumberOfFailedSuboperations = rsp.NumberOfWarningSuboperations = 0
    return rsp


def test_pending_get_response_leaves_with_the_next_message_of_the_association_thread():
    results = {}

    def run():
        assoc, _queued = fake_assoc(16384, thread=threading.current_thread())
        direct = FakeDirect()
        outbound = Outbound(assoc, direct)
        outbound.install()
        assoc.dimse.send_msg(pending_get(2), 1)
        results["after_pending"] = list(direct.writes)
        outbound.send(1, store_request(6, CT, "1.2.3.5"), b"\x08\x00\x18\x00")
        results["writes"] = list(direct.writes)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert results["after_pending"] == []
    (write,) = results["writes"]
    pdvs = parse_pdus(write, 16384)
    assert pdvs[0][2] == pending_retrieve_command(pending_get(2))
    assert pdvs[1][2] == store_request(6, CT, "1.2.3.5")


def test_pending_move_response_and_other_threads_leave_at_once():
    assoc, _queued = fake_assoc(16384, thread=SimpleNamespace())  # not the calling thread
    direct = FakeDirect()
    outbound = Outbound(assoc, direct)
    outbound.install()
    assoc.dimse.send_msg(pending_get(2), 1)
    assert len(direct.writes) == 1
    move = C_MOVE()
    move.MessageIDBeingRespondedTo, move.AffectedSOPClassUID, move.Status = 3, MOVE_MODEL, 0xFF00
    move.NumberOfRemainingSuboperations, move.NumberOfCompletedSuboperations = 5, 0
    move.NumberOfFailedSuboperations = move.NumberOfWarningSuboperations = 0
    assoc.dimse.send_msg(move, 1)
    assert len(direct.writes) == 2
    assert parse_pdus(direct.writes[1], 16384)[0][2] == pending_retrieve_command(move)


class PlainArchive:
    def __init__(self, objects: dict[str, bytes]):
        self.objects = objects

    def read(self, object_id: str) -> bytes:
        return self.objects[object_id]


def without_group_length(part10: bytes) -> bytes:
    """The same file with its (0002,0000) element left out (some writers omit it)."""
    return part10[:132] + part10[144:]


@pytest.mark.parametrize("group_length", [True, False])  # False: pynetdicom's own path (memfd)
def test_object_sender_stores_the_exact_data_set(tmp_path, monkeypatch, group_length):
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage

    from appliance.dicom.scu import ObjectSender, associate, storage_contexts
    from helpers import free_port

    source = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    part10 = (tmp_path / "ct.dcm").read_bytes()
    syntax = str(ds.file_meta.TransferSyntaxUID)
    received = []
    # As the appliance runs unless its log level is DEBUG (node.py): pynetdicom's standard handlers, which
    # log every DIMSE message and so need its per-message path, are not bound.
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")

    def on_store(event):
        received.append(event.request.DataSet.getvalue())
        return 0x0000 if len(received) == 1 else 0xA700  # the second: out of resources

    scp = AE(ae_title="STORESCP")
    scp.add_supported_context(CTImageStorage, [syntax, ExplicitVRLittleEndian])
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        stored = part10 if group_length else without_group_length(part10)
        assert (dataset_offset(stored) is not None) is group_length
        sender = ObjectSender(PlainArchive({"aa": stored, "bb": stored}))
        outs = chain([Outgoing(CT, ds.SOPInstanceUID, oid, syntax) for oid in ("aa", "bb")])
        assoc = associate("PACSBOX", "STORESCP", "127.0.0.1", port, storage_contexts([(CT, syntax)]), timeout=10)
        try:
            sender.install(assoc)
            assert Outbound.for_assoc(assoc).direct is not None  # whole PDUs from this thread (tuned plain TCP)
            assert assoc.dimse._pacs_store_responses  # the responses are read by outbound.py too
            for msg_id, out in enumerate(outs, 1):
                outcome = sender.send(assoc, out, msg_id=msg_id, originator_aet="MOVER", originator_id=3)
                assert (outcome.status, outcome.transcoded) == (0x0000 if msg_id == 1 else 0xA700, False)
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert received == [part10[dataset_offset(part10):]] * 2


class SlowArchive(PlainArchive):
    """Decrypting the next object takes long: the peer's answer arrives while the sender is still at it."""

    def __init__(self, objects: dict[str, bytes], reading: float):
        super().__init__(objects)
        self.reading = reading

    def read(self, object_id: str) -> bytes:
        import time

        time.sleep(self.reading)
        return super().read(object_id)


def test_the_sender_reads_each_answer_itself_though_it_comes_while_the_next_object_is_read(tmp_path, monkeypatch):
    """The claim is taken before the C-STORE-RQ leaves (InlineResponses.claim_ahead): taken only once the
    sender waits, the DUL thread had read the answer first, and handed it over through its queue."""
    from pynetdicom import AE, _config
    from pynetdicom.sop_class import CTImageStorage

    from appliance.dicom import outbound
    from appliance.dicom.scu import ObjectSender, associate, storage_contexts
    from helpers import free_port

    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    part10, syntax = (tmp_path / "ct.dcm").read_bytes(), str(ds.file_meta.TransferSyntaxUID)
    read_here = []
    original = outbound.store_response_pdu
    monkeypatch.setattr(outbound, "store_response_pdu", lambda pdu: read_here.append(1) or original(pdu))
    scp = AE(ae_title="STORESCP")
    scp.add_supported_context(CTImageStorage, syntax)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    count = 6
    try:
        ids = [f"{i:02x}" for i in range(count)]
        sender = ObjectSender(SlowArchive(dict.fromkeys(ids, part10), reading=0.05))
        outs = chain([Outgoing(CT, f"1.2.3.{i}", oid, syntax) for i, oid in enumerate(ids)])
        assoc = associate("PACSBOX", "STORESCP", "127.0.0.1", port, storage_contexts([(CT, syntax)]), timeout=10)
        try:
            sender.install(assoc)
            statuses = [sender.send(assoc, out, msg_id=i).status for i, out in enumerate(outs, 1)]
            assert not assoc.dul.socket._inline  # every claim was given back
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert statuses == [0x0000] * count
    assert len(read_here) >= count - 1  # the first may meet the DUL thread still handling the A-ASSOCIATE-AC


def store_response_command(status: int, **extra) -> bytes:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo, rsp.Status = 12, status
    rsp.AffectedSOPClassUID, rsp.AffectedSOPInstanceUID = CT, "1.2.3.45"
    for keyword, value in extra.items():
        setattr(rsp, keyword, value)
    return pynetdicom_command(C_STORE_RSP, rsp)


def test_parse_store_response_reads_plain_responses_only():
    assert parse_store_response(store_response_command(0x0000)) == (12, 0x0000)
    assert parse_store_response(store_response_command(0xA700)) == (12, 0xA700)
    with_comment = store_response_command(0xA700, ErrorComment="disk full")
    assert parse_store_response(with_comment) is None  # pynetdicom's way keeps the comment for the log
    assert parse_store_response(store_response_command(0)[:-1]) is None  # truncated
    assert parse_store_response(store_request(12, CT, "1.2.3.45")) is None  # not a response


class Recorder:
    def __init__(self):
        self.seen = []

    def __call__(self, event):
        self.seen.append(event.message)


def receiving_assoc(handler=None):
    import queue

    handlers = [(handler, None)] if handler else []
    passed_on = []
    dimse = SimpleNamespace(message=None, msg_queue=queue.Queue(), receive_primitive=passed_on.append)
    assoc = SimpleNamespace(dimse=dimse, get_handlers=lambda event: handlers if event == evt.EVT_DIMSE_RECV else [],
                            abort=None, _abort_nonblocking=None, _abort_blocking=None)  # evt.trigger swaps these
    return assoc, passed_on


def p_data(context_id: int, *pdvs: bytes) -> P_DATA:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, pdv] for pdv in pdvs]
    return primitive


def test_plain_store_responses_skip_pynetdicom_decoding_and_reach_marked_handlers():
    recorder = Recorder()
    recorder.command_values_only = True
    assoc, passed_on = receiving_assoc(recorder)
    receive_store_responses(assoc)
    assoc.dimse.receive_primitive(p_data(3, b"\x03" + store_response_command(0xB000)))
    context_id, rsp = assoc.dimse.msg_queue.get_nowait()
    assert (context_id, type(rsp), rsp.MessageIDBeingRespondedTo, rsp.Status) == (3, C_STORE, 12, 0xB000)
    assert rsp.is_valid_response and not passed_on
    [message] = recorder.seen
    assert isinstance(message, StoreResponseMessage) and message.command_set.Status == 0xB000
    commented = p_data(3, b"\x03" + store_response_command(0xA700, ErrorComment="disk full"))
    assoc.dimse.receive_primitive(commented)
    fragmented = p_data(3, b"\x01" + store_response_command(0)[:20])
    assoc.dimse.receive_primitive(fragmented)
    assert passed_on == [commented, fragmented] and assoc.dimse.msg_queue.empty()


def test_an_unmarked_dimse_handler_keeps_pynetdicom_decoding():
    assoc, passed_on = receiving_assoc(Recorder())  # e.g. pynetdicom's debug log
    receive_store_responses(assoc)
    plain = p_data(3, b"\x03" + store_response_command(0))
    assoc.dimse.receive_primitive(plain)
    assert passed_on == [plain]


def pdu_of(context_id: int, *pdvs: bytes) -> bytes:
    """A P-DATA-TF PDU of (message control header + fragment) PDVs."""
    items = b"".join(struct.pack(">IB", len(pdv) + 1, context_id) + pdv for pdv in pdvs)
    return struct.pack(">BBI", 0x04, 0, len(items)) + items


def cancel_request() -> C_CANCEL:
    primitive = C_CANCEL()
    primitive.MessageIDBeingRespondedTo = 1
    return primitive


class FakeTransport:
    """What InlineResponses uses of sockets.TunedAssociationSocket, scripted."""

    def __init__(self, readable=True, pdu=None, claim=True):
        self.readable, self.pdu, self.claim = readable, pdu, claim
        self.handed, self.released = [], []

    def claim_reads(self):
        return self.claim

    def wait_readable(self, timeout):
        return self.readable

    def read_pdu(self):
        return self.pdu

    def hand_over(self, pdu):
        self.handed.append(pdu)

    def release_reads(self, wake=False):
        self.released.append(wake)


def inline_assoc(transport, handler=None):
    import queue

    assoc, passed_on = receiving_assoc(handler)
    timer = SimpleNamespace(restarts=0)
    timer.restart = lambda: setattr(timer, "restarts", timer.restarts + 1)
    assoc.dul = SimpleNamespace(socket=transport, state_machine=SimpleNamespace(current_state="Sta6"), _idle_timer=timer)
    assoc.is_established = True
    assoc.dimse.dimse_timeout = 30
    assoc.dimse.msg_queue = queue.Queue()
    assoc.dimse.get_msg = lambda block=False: ("pynetdicom's way", block)
    return assoc


def test_a_plain_store_response_is_read_by_the_waiting_thread():
    recorder = Recorder()
    recorder.command_values_only = True
    transport = FakeTransport(pdu=pdu_of(5, b"\x03" + store_response_command(0xB000)))
    assoc = inline_assoc(transport, recorder)
    receive_store_responses(assoc)
    assert isinstance(assoc.dimse.get_msg, InlineResponses)
    context_id, rsp = assoc.dimse.get_msg(block=True)
    assert (context_id, type(rsp), rsp.MessageIDBeingRespondedTo, rsp.Status) == (5, C_STORE, 12, 0xB000)
    assert rsp.is_valid_response and transport.released == [False] and not transport.handed
    assert assoc.dul._idle_timer.restarts == 1  # a whole message is progress
    [message] = recorder.seen
    assert message.command_set.Status == 0xB000
    assert assoc.dimse.get_msg(block=False) == ("pynetdicom's way", False)  # the reactor's look: no read


@pytest.mark.parametrize("pdvs", [
    (b"\x03" + store_response_command(0xA700, ErrorComment="disk full"),),  # pynetdicom keeps the comment
    (b"\x01" + store_response_command(0)[:20], b"\x03" + store_response_command(0)[20:]),  # two PDVs
    (b"\x03" + pynetdicom_command(C_CANCEL_RQ, cancel_request()),),  # a C-CANCEL-RQ
])
def test_any_other_pdu_goes_to_the_dul_thread_and_the_wait_to_pynetdicom(pdvs):
    pdu = pdu_of(5, *pdvs)
    transport = FakeTransport(pdu=pdu)
    assoc = inline_assoc(transport)
    receive_store_responses(assoc)
    assert assoc.dimse.get_msg(block=True) == ("pynetdicom's way", True)
    assert transport.handed == [pdu] and transport.released == [True]  # the DUL thread is woken for it


@pytest.mark.parametrize("pdu", [bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0)), bytes((0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0))])
def test_abort_and_release_requests_go_to_the_dul_thread(pdu):
    transport = FakeTransport(pdu=pdu)
    assoc = inline_assoc(transport)
    receive_store_responses(assoc)
    assert assoc.dimse.get_msg(block=True) == ("pynetdicom's way", True)
    assert transport.handed == [pdu] and transport.released == [True]


def test_a_peer_that_never_answers_gets_the_dimse_timeout_answer():
    transport = FakeTransport(readable=False)
    assoc = inline_assoc(transport)
    receive_store_responses(assoc)
    assert assoc.dimse.get_msg(block=True) == (None, None)  # as pynetdicom's get_msg after dimse_timeout
    assert transport.released == [True] and not transport.handed


@pytest.mark.parametrize("readable", [None, True])
def test_a_closed_connection_is_left_to_the_dul_thread(readable):
    transport = FakeTransport(readable=readable, pdu=None)  # closed meanwhile, or a short read
    assoc = inline_assoc(transport)
    receive_store_responses(assoc)
    assert assoc.dimse.get_msg(block=True) == ("pynetdicom's way", True)  # its abort answers that wait
    assert transport.released == [True]


@pytest.mark.parametrize("change", ["claim", "state", "queued", "half"])
def test_no_claim_no_inline_read(change):
    transport = FakeTransport(pdu=pdu_of(5, b"\x03" + store_response_command(0)))
    assoc = inline_assoc(transport)
    receive_store_responses(assoc)
    if change == "claim":
        transport.claim = False
    elif change == "state":
        assoc.dul.state_machine.current_state = "Sta7"
    elif change == "queued":
        assoc.dimse.msg_queue.put((1, "queued"))
    else:
        assoc.dimse.message = object()  # pynetdicom is assembling a message from several PDUs
    assert assoc.dimse.get_msg(block=True) == ("pynetdicom's way", True)
    assert transport.released == []  # never claimed


def test_pdu_handlers_keep_the_dul_thread_reading():
    transport = FakeTransport(pdu=pdu_of(5, b"\x03" + store_response_command(0)))
    assoc = inline_assoc(transport)
    assoc.get_handlers = lambda event: [(Recorder(), None)] if event == evt.EVT_PDU_RECV else []
    receive_store_responses(assoc)
    assert not isinstance(assoc.dimse.get_msg, InlineResponses)


def test_store_response_pdu_reads_one_plain_pdv_only():
    plain = b"\x03" + store_response_command(0xB000)
    assert store_response_pdu(pdu_of(7, plain)) == (7, 12, 0xB000)
    assert store_response_pdu(pdu_of(7, plain)[:-1]) is None
    assert store_response_pdu(pdu_of(7, plain, plain)) is None
    assert store_response_pdu(pdu_of(7, b"\x02" + store_response_command(0))) is None  # a data set fragment
    assert store_response_pdu(b"\x07" + pdu_of(7, plain)[1:]) is None


def test_installed_at_connection_open_unless_every_message_is_watched():
    assoc, _queued = fake_assoc(16384)
    original = assoc.dimse.send_msg
    on_connection_open(SimpleNamespace(assoc=assoc))
    assert isinstance(assoc.dimse._pacs_outbound, Outbound) and assoc.dimse.send_msg != original
    installed = assoc.dimse.send_msg
    on_connection_open(SimpleNamespace(assoc=assoc))  # once only
    assert assoc.dimse.send_msg == installed and Outbound.for_assoc(assoc) is assoc.dimse._pacs_outbound
    watched, _queued = fake_assoc(16384)
    watched.get_handlers = lambda event: [(Recorder(), None)] if event == evt.EVT_DIMSE_SENT else []
    on_connection_open(SimpleNamespace(assoc=watched))  # pynetdicom's debug log: its own path
    assert not hasattr(watched.dimse, "_pacs_outbound")
