"""C-STOREs read and answered by the association thread alone (inline_store.InlineStores): the data set bytes
exactly as sent however they are fragmented, and everything that is not a plain C-STORE-RQ served by pynetdicom
exactly as without the fast path (each odd case is sent to a server with and one without it)."""
from __future__ import annotations

import os
import struct
import threading
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, Verification

import readback
from appliance.app import build
from appliance.config import load
from appliance.dicom.association_log import AssociationLog
from appliance.dicom.inline_store import InlineStores, parse_store_request
from appliance.dicom.node import CONNECTION_TUNING
from appliance.dicom.outbound import store_request
from appliance.dicom.scu import nodelay, reactor_paused
from appliance.dicom.store import ReceivedStore
from appliance.dicom.status import status
from helpers import dcmtk, free_port, init_data_dir, run_cli, wait_until
from test_core_store import assert_stored_as_sent, write_source
from tests.synth import make_instance

CT, MR = str(CTImageStorage), str(MRImageStorage)
CT_CX, MR_CX, ECHO_CX = 1, 3, 5  # the context IDs of the requestor below, in the order it proposes them


@pytest.fixture(autouse=True)
def no_pynetdicom_log_handlers(monkeypatch):
    """As the box runs (node.py): pynetdicom's standard handlers watch every PDU, which keeps its own path."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")


class StoreServer:
    """A pynetdicom acceptor with the box's connection tuning and a store handler that keeps what it got.
    ``fast``: the handler has the ``received`` form inline_store.py needs; without it pynetdicom serves all."""

    def __init__(self, fast: bool = True, max_pdu: int = 16384, answer=0x0000, network_timeout: float = 60,
                 extra_handlers=()):
        self.stored: dict[str, tuple[str, bytes, str]] = {}  # SOP Instance UID -> (syntax, data set, which way)
        self.assocs: list = []
        self.answer = answer
        self.closed = threading.Event()
        ae = AE(ae_title="STORESCP")
        ae.maximum_pdu_size = max_pdu
        ae.network_timeout = network_timeout
        for uid in (CTImageStorage, MRImageStorage, Verification):
            ae.add_supported_context(uid, ImplicitVRLittleEndian)
        self.aborted = threading.Event()

        def on_store(event):
            return self.keep(ReceivedStore.from_event(event), "pynetdicom")

        if fast:
            on_store.received = lambda _assoc, received: self.keep(received, "inline")
        self.log = AssociationLog()
        handlers = [*CONNECTION_TUNING, (evt.EVT_CONN_OPEN, lambda e: self.assocs.append(e.assoc)),
                    (evt.EVT_C_STORE, on_store), *self.log.handlers(), *extra_handlers,
                    (evt.EVT_ABORTED, lambda _e: self.aborted.set()),
                    (evt.EVT_CONN_CLOSE, lambda _e: self.closed.set())]  # after the log's line
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = self.server.server_address[1]

    def keep(self, received: ReceivedStore, way: str):
        part10 = received.part10()
        self.stored[received.sop_instance_uid] = (received.transfer_syntax, part10[part10.index(b"DICM") + 4:], way)
        if callable(self.answer):
            return self.answer(received)
        return self.answer

    def ways(self) -> list[str]:
        return [way for _ts, _data, way in self.stored.values()]

    def close(self):
        self.server.shutdown()


# As the box's own requestors (scu.associate): a tuned DIMSE queue refuses the reactor while send_raw or
# send_c_store has it paused. pynetdicom's own pause only waits for a flag the reactor may not have reset
# yet after the previous pause, and then the reactor can take the answer ("unexpected C-STORE message").
TUNED = [(evt.EVT_CONN_OPEN, nodelay)]


def requestor(port: int, max_pdu: int = 16384):
    ae = AE(ae_title="STORESCU")
    ae.maximum_pdu_size = max_pdu
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 30
    for uid in (CTImageStorage, MRImageStorage, Verification):
        ae.add_requested_context(uid, ImplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="STORESCP", evt_handlers=TUNED)
    assert assoc.is_established
    assert assoc.dimse.msg_queue.checkpoint is assoc._reactor_checkpoint  # the tuned queue (TUNED)
    assert [cx.context_id for cx in assoc.accepted_contexts] == [CT_CX, MR_CX, ECHO_CX]
    return assoc


def claimed(srv: StoreServer) -> None:
    """Wait until the newest association's thread holds the socket's reads (it keeps them until a PDU comes):
    an association's first request may otherwise reach the DUL thread first (pynetdicom's way)."""
    wait_until(lambda: srv.assocs and srv.assocs[-1].dul.socket._inline, 30, 0.01, what="the reads to be claimed")


def data_set(ds: Dataset) -> bytes:
    return encode(ds, True, True)


def pdv(context_id: int, header: int, data: bytes) -> bytes:
    return struct.pack(">I", len(data) + 2) + bytes((context_id, header)) + data


def pdu(*pdvs: bytes, kind: int = 0x04) -> bytes:
    body = b"".join(pdvs)
    return bytes((kind, 0)) + struct.pack(">I", len(body)) + body


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def send_raw(assoc, raw: bytes):
    """Write ``raw`` on the requestor's socket and wait for one DIMSE answer: (status or None, aborted)."""
    with reactor_paused(assoc):
        assoc.dul.socket.socket.sendall(raw)
        _cx, rsp = assoc.dimse.get_msg(block=True)
    if rsp is None:
        return None, True
    return int(rsp.Status), False


def store_message(ds: Dataset, msg_id: int = 1, layout: str = "split", context_id: int = CT_CX,
                  command: bytes | None = None) -> bytes:
    """One C-STORE-RQ as P-DATA-TF PDUs in one of several layouts senders use."""
    command = command or store_request(msg_id, ds.SOPClassUID, ds.SOPInstanceUID)
    data = data_set(ds)
    if layout == "one pdu":  # command and whole data set in one PDU
        return pdu(pdv(context_id, 3, command), pdv(context_id, 2, data))
    if layout == "command with first data":  # dcmtk-like: the last command fragment and data begin together
        parts = chunks(data, 1000)
        out = pdu(pdv(context_id, 3, command), pdv(context_id, 0, parts[0]))
        for i, part in enumerate(parts[1:], 1):
            out += pdu(pdv(context_id, 2 if i == len(parts) - 1 else 0, part))
        return out
    if layout == "tiny":  # the command in two fragments, data in 100-byte PDVs three to a PDU
        parts = chunks(data, 100)
        out = pdu(pdv(context_id, 1, command[:20])) + pdu(pdv(context_id, 3, command[20:]))
        pdvs = [pdv(context_id, 2 if i == len(parts) - 1 else 0, p) for i, p in enumerate(parts)]
        for i in range(0, len(pdvs), 3):
            out += pdu(*pdvs[i:i + 3])
        return out
    return pdu(pdv(context_id, 3, command)) + pdu(pdv(context_id, 2, data))  # "split"


@pytest.fixture
def server():
    srv = StoreServer(max_pdu=1 << 18)  # the raw layouts below put up to a whole data set in one PDU
    yield srv
    srv.close()


def test_a_pynetdicom_sender_with_a_small_pdu_is_served_inline_byte_for_byte():
    fast, plain = StoreServer(max_pdu=4096), StoreServer(fast=False, max_pdu=4096)
    try:
        datasets = [make_instance("CT"), make_instance("MR"), make_instance("CT")]
        for srv in (fast, plain):
            assoc = requestor(srv.port)
            if srv is fast:
                claimed(srv)
            assert [int(assoc.send_c_store(ds).Status) for ds in datasets] == [0, 0, 0]
            assoc.release()
        assert fast.ways() == ["inline"] * 3 and plain.ways() == ["pynetdicom"] * 3
        for ds in datasets:
            uid = str(ds.SOPInstanceUID)
            assert fast.stored[uid][:2] == plain.stored[uid][:2]
            assert fast.stored[uid][1].endswith(data_set(ds))
        assert isinstance(fast.assocs[0].dimse.get_msg, InlineStores)
        assert fast.assocs[0].dimse.get_msg.served == 3
    finally:
        fast.close()
        plain.close()


@pytest.mark.parametrize("layout", ["split", "one pdu", "command with first data", "tiny"])
def test_fragmented_layouts_arrive_byte_for_byte(server, layout):
    assoc = requestor(server.port)
    claimed(server)
    datasets = [make_instance("CT") for _ in range(2)]
    for n, ds in enumerate(datasets, 1):
        assert send_raw(assoc, store_message(ds, n, layout)) == (0, False)
    assoc.release()
    for ds in datasets:
        syntax, data, way = server.stored[str(ds.SOPInstanceUID)]
        assert (syntax, way) == (ImplicitVRLittleEndian, "inline")
        assert data.endswith(data_set(ds)) and len(data) > len(data_set(ds))


def test_refusals_keep_their_comment_and_the_association_log_counts(caplog):
    def answer(received):
        return 0x0000 if received.sop_class_uid == CT else status(0xA700, "disk full")
    srv = StoreServer(answer=answer)
    try:
        assoc = requestor(srv.port)
        claimed(srv)
        ct, mr = make_instance("CT"), make_instance("MR")
        ok, refused = assoc.send_c_store(ct), assoc.send_c_store(mr)
        assert int(ok.Status) == 0 and int(refused.Status) == 0xA700
        assert refused.ErrorComment == "disk full"
        with caplog.at_level("INFO", logger="appliance.dicom.association_log"):
            assoc.release()
            assert srv.closed.wait(30)
            assert any("stored 1, failed 1" in r.getMessage() for r in caplog.records)
        assert srv.ways() == ["inline", "inline"]
    finally:
        srv.close()


def test_a_handler_exception_is_answered_0xC211():
    def answer(_received):
        raise RuntimeError("boom")
    srv = StoreServer(answer=answer)
    try:
        assoc = requestor(srv.port)
        assert int(assoc.send_c_store(make_instance("CT")).Status) == 0xC211
        assoc.release()
    finally:
        srv.close()


def test_other_messages_go_to_pynetdicom_and_stores_go_on_inline(server):
    assoc = requestor(server.port)
    first, second = make_instance("CT"), make_instance("CT")
    claimed(server)
    assert int(assoc.send_c_store(first).Status) == 0
    assert int(assoc.send_c_echo().Status) == 0
    claimed(server)
    assert int(assoc.send_c_store(second).Status) == 0
    assoc.release()
    assert assoc.is_released
    assert server.ways() == ["inline", "inline"]


def _odd_cases():
    ds = make_instance("CT")
    good = store_request(1, ds.SOPClassUID, ds.SOPInstanceUID)
    with_extra = good[:12] + struct.pack("<HHI", 0, 0x0001, 0) + good[12:]  # an element not in a C-STORE-RQ
    with_extra = struct.pack("<HHII", 0, 0, 4, len(with_extra) - 12) + with_extra[12:]
    data = data_set(ds)
    return {
        "unaccepted context": store_message(ds, context_id=7),
        "SOP class of another context": store_message(ds, context_id=MR_CX),
        "extra command element": store_message(ds, command=with_extra),
        "data on another context mid-message": pdu(pdv(CT_CX, 3, good), pdv(CT_CX, 0, data[:100]))
        + pdu(pdv(MR_CX, 2, data[100:])),
        "data before the command ends": pdu(pdv(CT_CX, 1, good[:20]), pdv(CT_CX, 2, data)),
    }


@pytest.mark.parametrize("case", sorted(_odd_cases()))
def test_what_is_not_a_plain_c_store_ends_as_without_the_fast_path(case):
    outcomes = []
    for fast in (True, False):
        srv = StoreServer(fast=fast, max_pdu=1 << 18)
        try:
            assoc = requestor(srv.port)
            outcome = send_raw(assoc, _odd_cases()[case])
            if not outcome[1]:
                assoc.release()
            assert srv.closed.wait(30)
            outcomes.append((outcome, srv.ways()))
        finally:
            srv.close()
    assert outcomes[0] == outcomes[1]
    assert "inline" not in outcomes[0][1]


def test_garbage_after_a_valid_pdu_aborts_after_the_store(server):
    assoc = requestor(server.port)
    claimed(server)
    ds = make_instance("CT")
    with reactor_paused(assoc):
        assoc.dul.socket.socket.sendall(store_message(ds) + b"\x55" * 64)
        _cx, rsp = assoc.dimse.get_msg(block=True)
    assert rsp is not None and int(rsp.Status) == 0
    assert server.closed.wait(30)  # the garbage's unknown PDU type: pynetdicom's Evt19, an abort
    assert server.ways() == ["inline"]


def test_a_pdu_longer_than_the_maximum_is_refused_mid_message(server):
    assoc = requestor(server.port)
    ds = make_instance("CT")
    command = store_request(1, ds.SOPClassUID, ds.SOPInstanceUID)
    head = pdu(pdv(CT_CX, 3, command)) + bytes((0x04, 0)) + struct.pack(">I", 1 << 24)
    outcome = send_raw(assoc, head)
    assert outcome == (None, True)
    assert server.closed.wait(30)
    assert server.stored == {}


@pytest.mark.parametrize("command, expected", [
    (store_request(7, CT, "1.2.3.4"), (7, CT, "1.2.3.4", 2, None, None)),
    (store_request(9, CT, "1.2.3.45", 1, "MOVER", 17), (9, CT, "1.2.3.45", 1, "MOVER", 17)),
    (store_request(9, CT, "1.2.03.4"), None),  # a leading zero: not a UID this path vouches for
    (store_request(9, CT, "1.2.3.4", 5), None),  # no such priority
    (store_request(9, CT, "1.2.3.4")[:-2], None),  # the group length no longer matches
])
def test_parse_store_request(command, expected):
    parsed = parse_store_request(command)
    assert (parsed and (parsed.message_id, parsed.sop_class_uid, parsed.sop_instance_uid, parsed.priority,
                        parsed.move_originator_aet, parsed.move_originator_id)) == expected


# ---- the box itself: dcmtk and pynetdicom senders, read back with a C-GET ----

@contextmanager
def running_box(data_dir: Path, **env: str):
    settings = {"PACS_DICOM_HOST": "127.0.0.1", "PACS_DICOM_PORT": str(free_port()), "PACS_STORAGE_RESERVE_MB": "16",
                "PACS_INBOX_ENABLED": "false", "PACS_INTEGRITY_SAMPLE_SIZE": "0", **env}
    app = build(load(data_dir, env={**os.environ, **settings}), with_web=False)
    app.start()
    try:
        yield app, str(app.node.bound_address[1])
    finally:
        app.stop()


def test_the_box_serves_fragmented_senders_inline_and_gives_back_the_bytes_sent(tmp_path, monkeypatch):
    served = []
    original = InlineStores._store

    def counted(self, message):
        served.append(message.request.sop_instance_uid)
        return original(self, message)

    monkeypatch.setattr(InlineStores, "_store", counted)
    instances = []
    original_init = InlineStores.__init__

    def remembered(self, *args):
        original_init(self, *args)
        instances.append(self)

    monkeypatch.setattr(InlineStores, "__init__", remembered)
    data_dir = init_data_dir(tmp_path / "data")
    sources = dict(write_source(tmp_path / "src", kind, patient_id="INLINE1", instance_number=i)
                   for i, kind in enumerate(["CT", "CT", "MR", "CT", "MR", "CT", "CT", "MR"]))
    files = list(sources.values())
    batches = (files[:3], files[3:6], files[6:])
    with running_box(data_dir, PACS_DICOM_INGEST_WORKERS="0") as (_app, port):
        small = dcmtk("storescu", "-aec", "PACSBOX", "--max-send-pdu", "4096", "127.0.0.1", port, *batches[0])
        assert small.returncode == 0, small.stderr
        default = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", port, *batches[1])
        assert default.returncode == 0, default.stderr
        assoc = requestor_of(port)
        wait_until(lambda: instances and instances[-1].transport._inline, 30, 0.01, what="the reads to be claimed")
        assert [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in batches[2]] == [0, 0]
        assoc.release()
        # dcmtk sends its first request as soon as the association is accepted: that one, and one after a request
        # served by pynetdicom, may reach the DUL thread first; once claimed, the next ones are read inline.
        assert {uid_of(f) for f in batches[2]} <= set(served) <= set(sources)
        out = tmp_path / "get"
        out.mkdir()
        got = dcmtk("getscu", "-P", "+B", "-aec", "PACSBOX", "-od", out, "-k", "QueryRetrieveLevel=PATIENT",
                    "-k", "PatientID=INLINE1", "127.0.0.1", port)
        assert got.returncode == 0, got.stderr
    retrieved = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes() for p in out.iterdir()}
    assert set(retrieved) == set(sources)
    # dcmtk sends a dcmtk-written file's data set as it is (test_core_store.py); pynetdicom re-encodes it,
    # so its objects are compared in test_a_pynetdicom_sender_with_a_small_pdu_is_served_inline_byte_for_byte
    by_dcmtk = {uid: path for uid, path in sources.items() if path in batches[0] + batches[1]}
    for uid, path in by_dcmtk.items():
        assert readback.dataset_bytes(retrieved[uid]) == readback.dataset_bytes(path.read_bytes()), path.name
    assert_stored_as_sent(data_dir, by_dcmtk)


def test_the_box_refuses_a_peer_without_the_store_permission_inline(tmp_path, monkeypatch):
    served = []
    original = InlineStores._store
    monkeypatch.setattr(InlineStores, "_store", lambda self, message: served.append(1) or original(self, message))
    data_dir = init_data_dir(tmp_path / "data")
    run_cli("modality", "add", "--data", data_dir, "LIMITED", "127.0.0.1", "104", "--no-store")
    uid, path = write_source(tmp_path / "src", "CT", patient_id="INLINE2")
    instances = []
    original_init = InlineStores.__init__
    monkeypatch.setattr(InlineStores, "__init__", lambda self, *args: original_init(self, *args) or instances.append(self))
    with running_box(data_dir, PACS_DICOM_INGEST_WORKERS="0") as (_app, port):
        assoc = requestor_of(port, calling="LIMITED")
        wait_until(lambda: instances and instances[-1].transport._inline, 30, 0.01, what="the reads to be claimed")
        rsp = assoc.send_c_store(pydicom.dcmread(path))
        assoc.release()
    assert int(rsp.Status) == 0x0124 and "without permission to store" in rsp.ErrorComment
    assert served == [1]
    assert uid not in readback.stored(data_dir)


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def requestor_of(port: str, calling: str = "INLINESCU"):
    ae = AE(ae_title=calling)
    ae.maximum_pdu_size = 4096
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(MRImageStorage)
    assoc = ae.associate("127.0.0.1", int(port), ae_title="PACSBOX", evt_handlers=TUNED)
    assert assoc.is_established
    return assoc


def test_the_store_services_of_the_node_and_of_a_worker_have_the_received_form():
    """What makes InlineStores serve them (the node binds store.service's handler; a worker too, with RemoteIngestor)."""
    from appliance.dicom import store
    for service in (store.service(object()), store.service(object(), object())):
        (handler,) = service.handlers
        assert callable(handler.fn.received)


def test_handlers_watching_every_pdu_or_message_received_keep_pynetdicoms_way():
    def every_pdu(_event):
        pass

    def every_message(_event):
        pass

    for handler in ((evt.EVT_PDU_RECV, every_pdu), (evt.EVT_DIMSE_RECV, every_message)):
        srv = StoreServer(extra_handlers=[handler])
        try:
            assoc = requestor(srv.port)
            assert [int(assoc.send_c_store(make_instance("CT")).Status) for _ in range(2)] == [0, 0]
            assoc.release()
            assert srv.ways() == ["pynetdicom", "pynetdicom"]
            assert not isinstance(srv.assocs[0].dimse.get_msg, InlineStores)
        finally:
            srv.close()


def test_a_pdu_that_never_completes_is_refused_by_its_deadline_while_read_inline(caplog):
    srv = StoreServer()
    try:
        assoc = requestor(srv.port)
        claimed(srv)
        assert int(assoc.send_c_store(make_instance("CT")).Status) == 0  # the next read is claimed ahead
        srv.assocs[0].network_timeout = 1  # only now: a slow machine cannot end the association before the store
        with caplog.at_level("WARNING", logger="appliance.dicom.sockets"):
            assoc.dul.socket.socket.sendall(bytes((0x04, 0)) + struct.pack(">I", 100) + b"\0" * 10)
            assert srv.closed.wait(30)
        assert any("did not complete a 100-byte PDU" in r.getMessage() for r in caplog.records)
        assert srv.ways() == ["inline"]
    finally:
        srv.close()


def test_an_idle_association_is_aborted_by_the_idle_timer_while_read_inline():
    srv = StoreServer()
    try:
        assoc = requestor(srv.port)
        claimed(srv)
        assert int(assoc.send_c_store(make_instance("CT")).Status) == 0  # the next read is claimed ahead
        srv.assocs[0].network_timeout = 1
        assert srv.aborted.wait(30) and srv.closed.wait(30)
        assert srv.ways() == ["inline"]
    finally:
        srv.close()
