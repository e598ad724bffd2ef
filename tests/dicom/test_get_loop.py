"""The box's own C-GET sub-operation loop (get_loop.py) and the shared decoded A-ASSOCIATE-RQ (request_cache.py).

A scripted C-GET SCP set up as the node sets up an association (tuned socket, outbound.py, the decoded
request cache, get_loop.install) answers a pynetdicom SCU for every status rule of PS3.4 C.4.3; the
appliance itself serves dcmtk's getscu and movescu (byte identity, a large object, a repeated request).
No timings: every wait is for an event.
"""
from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import readback
from helpers import CLI, Server, free_port, init_data_dir
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, StudyRootQueryRetrieveInformationModelGet

from appliance.dicom import get_loop
from appliance.dicom.outbound import C_GET_RSP, on_connection_open, receive_store_responses, retrieve_response
from appliance.dicom.request_cache import DecodedRequests
from appliance.dicom.sockets import tune_accepted_socket
from appliance.dicom.status import status
from tests.synth import make_instance, write_study

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tls"))
from tls_certs import Authority  # noqa: E402

GET = StudyRootQueryRetrieveInformationModelGet
SCU = "LOOPSCU"


@pytest.fixture(autouse=True)
def no_pynetdicom_log_handlers(monkeypatch):
    """As the box runs (node.py): pynetdicom's standard handlers watch every PDU, which keeps its own path."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")


class ScriptedGetServer:
    """A C-GET SCP whose handler yields ``self.count`` and then ``self.script`` (status, dataset) pairs."""

    def __init__(self, server_tls: ssl.SSLContext | None = None, client_tls: ssl.SSLContext | None = None,
                 watchers=(), bind_get: bool = True):
        self.client_tls = client_tls
        self.requests = DecodedRequests()
        self.count, self.script = 0, []
        self.served_by_loop: list[bool] = []
        self.ae = AE(ae_title="GETSCP")
        self.ae.add_supported_context(GET)
        for sop_class in (CTImageStorage, MRImageStorage):
            self.ae.add_supported_context(sop_class, scu_role=False, scp_role=True)
        handlers = [(evt.EVT_CONN_OPEN, tune_accepted_socket), (evt.EVT_CONN_OPEN, on_connection_open),
                    *self.requests.handlers(), (evt.EVT_ESTABLISHED, get_loop.install),
                    *([(evt.EVT_C_GET, self.on_get)] if bind_get else []), *watchers]
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers,
                                           ssl_context=server_tls)

    def on_get(self, event):
        receive_store_responses(event.assoc)
        self.served_by_loop.append("_serve_request" in event.assoc.__dict__)
        yield self.count
        for code, dataset in self.script:
            if code == "raise":
                raise RuntimeError("a broken handler")
            if code == 0xFF00 and event.is_cancelled:
                yield 0xFE00, None
                return
            yield code, dataset

    def get(self, on_store, storage=(CTImageStorage, MRImageStorage)):
        """C-GET from a pynetdicom SCU that takes ``storage`` with the SCP role; (responses, released)."""
        ae = AE(ae_title=SCU)
        ae.add_requested_context(GET)
        for sop_class in storage:
            ae.add_requested_context(sop_class)
        assoc = ae.associate("127.0.0.1", self.server.server_address[1], ae_title="GETSCP",
                             ext_neg=[build_role(sop_class, scp_role=True) for sop_class in storage],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)],
                             tls_args=(self.client_tls, None) if self.client_tls else None)
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        responses = [(rsp, identifier) for rsp, identifier in assoc.send_c_get(query, GET) if rsp]
        assoc.release()
        return responses

    def close(self):
        self.server.shutdown()


@pytest.fixture
def server():
    srv = ScriptedGetServer()
    yield srv
    srv.close()


def instances(n, kind="CT"):
    return [make_instance(kind, patient_id="LOOP") for _ in range(n)]


def failed_list(identifier) -> list[str]:
    value = identifier.FailedSOPInstanceUIDList
    return [value] if isinstance(value, str) else list(value)


def final_counts(rsp):
    return (rsp.Status, rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations,
            rsp.NumberOfWarningSuboperations)


def test_every_sub_operation_with_pending_counts_and_a_repeated_request(server):
    datasets = instances(4)
    server.count, server.script = 4, [(0xFF00, ds) for ds in datasets]
    for _ in range(2):  # the second association's request is the same bytes: decoded once, negotiated anew
        received = []
        responses = server.get(lambda event: received.append(event.dataset.SOPInstanceUID) or 0x0000)
        assert received == [ds.SOPInstanceUID for ds in datasets]
        pending = [rsp for rsp, _ in responses[:-1]]
        assert [rsp.Status for rsp in pending] == [0xFF00] * 4
        assert [(rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations) for rsp in pending] \
            == [(3, 1), (2, 2), (1, 3), (0, 4)]
        assert final_counts(responses[-1][0]) == (0x0000, 4, 0, 0)
    assert server.served_by_loop == [True, True]
    assert len(server.requests._decoded) == 1


def test_failed_and_warning_sub_operations_are_counted_and_listed(server):
    datasets = instances(4)
    server.count, server.script = 4, [(0xFF00, ds) for ds in datasets]
    answers = {datasets[1].SOPInstanceUID: 0xA700, datasets[2].SOPInstanceUID: 0xB007}
    responses = server.get(lambda event: answers.get(event.dataset.SOPInstanceUID, 0x0000))
    rsp, identifier = responses[-1]
    assert final_counts(rsp) == (0xB000, 2, 1, 1)
    assert failed_list(identifier) == [datasets[1].SOPInstanceUID]


def test_all_sub_operations_failing_is_a_failure(server):
    datasets = instances(2)
    server.count, server.script = 2, [(0xFF00, ds) for ds in datasets]
    rsp, identifier = server.get(lambda event: 0xC000)[-1]
    assert final_counts(rsp) == (0xA702, 0, 2, 0)
    assert failed_list(identifier) == [ds.SOPInstanceUID for ds in datasets]


def test_a_sop_class_the_peer_did_not_accept_fails_its_sub_operations(server):
    ct, mr = instances(2), instances(1, "MR")
    server.count, server.script = 3, [(0xFF00, ds) for ds in (ct[0], mr[0], ct[1])]
    received = []
    rsp, identifier = server.get(lambda event: received.append(event.dataset.SOPInstanceUID) or 0x0000,
                                 storage=(CTImageStorage,))[-1]
    assert received == [ct[0].SOPInstanceUID, ct[1].SOPInstanceUID]
    assert final_counts(rsp) == (0xB000, 2, 1, 0)
    assert failed_list(identifier) == [mr[0].SOPInstanceUID]


def test_a_cancel_reports_the_remaining_sub_operations(server):
    datasets = instances(5)
    server.count, server.script = 5, [(0xFF00, ds) for ds in datasets]
    received = []

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        if len(received) == 2:
            cx = next(cx for cx in event.assoc.accepted_contexts if cx.abstract_syntax == GET)
            event.assoc.send_c_cancel(1, cx.context_id)  # pynetdicom's first C-GET has Message ID 1
        return 0x0000

    rsp, _identifier = server.get(on_store)[-1]
    assert rsp.Status == 0xFE00
    assert (rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations) == (3, 2)
    assert len(received) == 2


def test_a_failure_yielded_by_the_handler_keeps_its_comment_and_fails_the_rest(server):
    datasets = instances(3)
    server.count = 3
    server.script = [(0xFF00, datasets[0]), (status(0xA900, "identifier does not match"), None)]
    rsp, _identifier = server.get(lambda event: 0x0000)[-1]
    assert rsp.Status == 0xA900 and rsp.ErrorComment == "identifier does not match"
    assert (rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations) == (1, 2)


def test_a_handler_that_raises_is_answered_and_the_association_lives_on(server):
    datasets = instances(2)
    server.count, server.script = 2, [(0xFF00, datasets[0]), ("raise", None)]
    rsp, _identifier = server.get(lambda event: 0x0000)[-1]
    assert rsp.Status == 0xC411
    server.script = [(0xFF00, ds) for ds in datasets]
    assert final_counts(server.get(lambda event: 0x0000)[-1][0]) == (0x0000, 2, 0, 0)


@pytest.mark.parametrize("count, expected", [(0, 0x0000), ("many", 0xC413), (70000, 0xC416)])
def test_the_number_of_sub_operations(server, count, expected):
    server.count, server.script = count, []
    responses = server.get(lambda event: 0x0000)
    assert [rsp.Status for rsp, _ in responses] == [expected]


def test_over_tls_the_loop_queues_its_responses_to_the_dul(tmp_path):
    """TLS: no direct writes (outbound.py queues every PDU to the DUL); same counts, failures and list."""
    ca = Authority(tmp_path / "ca")
    pem = ca.issue("server", "localhost", server=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pem.cert, pem.key)
    client_tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca.pem.cert))
    client_tls.check_hostname = False
    srv = ScriptedGetServer(server_tls, client_tls)
    try:
        datasets = instances(3)
        srv.count, srv.script = 3, [(0xFF00, ds) for ds in datasets]
        responses = srv.get(lambda event: 0xA700 if event.dataset.SOPInstanceUID == datasets[0].SOPInstanceUID
                            else 0x0000)
        assert [rsp.Status for rsp, _ in responses] == [0xFF00] * 3 + [0xB000]
        assert final_counts(responses[-1][0]) == (0xB000, 2, 1, 0)
        assert failed_list(responses[-1][1]) == [datasets[0].SOPInstanceUID]
        assert srv.served_by_loop == [True]
    finally:
        srv.close()


def test_no_handler_bound_is_answered_as_pynetdicom_answers_it():
    srv = ScriptedGetServer(bind_get=False)
    try:
        statuses = [rsp.Status for rsp, _ in srv.get(lambda event: 0x0000)]
        assert statuses == [0xC411]  # as pynetdicom: a failure, and the association lives
    finally:
        srv.close()


def test_a_handler_watching_every_message_sent_sees_every_c_get_response():
    """A handler on EVT_DIMSE_SENT (pynetdicom's debug log) keeps pynetdicom's encoding of every message."""
    sent = []
    srv = ScriptedGetServer(watchers=[(evt.EVT_DIMSE_SENT, lambda event: sent.append(type(event.message).__name__))])
    try:
        datasets = instances(2)
        srv.count, srv.script = 2, [(0xFF00, ds) for ds in datasets]
        assert final_counts(srv.get(lambda event: 0x0000)[-1][0]) == (0x0000, 2, 0, 0)
        assert sent == ["C_STORE_RQ", "C_GET_RSP", "C_STORE_RQ", "C_GET_RSP", "C_GET_RSP"]
    finally:
        srv.close()


@pytest.mark.parametrize("counts", [(99, 1, 0, 0), (0, 65535, 3, 2)])
def test_pending_commands_are_the_bytes_outbound_encodes(counts):
    sop_class = str(GET)
    assert get_loop.PendingCommand(7, sop_class)(*counts) == retrieve_response(C_GET_RSP, 7, sop_class, 0xFF00, *counts)


def test_decoded_requests_are_shared_read_only_and_bounded():
    requests = DecodedRequests(entries=2, largest=4096)
    raws = []
    for calling in ("A", "B", "C"):
        pdu = A_ASSOCIATE_RQ()
        primitive = A_ASSOCIATE()
        primitive.calling_ae_title, primitive.called_ae_title = calling, "PACSBOX"
        primitive.application_context_name = "1.2.840.10008.3.1.1.1"
        cx = build_context(CTImageStorage)
        cx.context_id = 1
        primitive.presentation_context_definition_list = [cx]
        pdu.from_primitive(primitive)
        raws.append(pdu.encode())
    first = requests.decoded(raws[0])
    assert requests.decoded(bytes(raws[0])) is first
    one, two = first.to_primitive(), first.to_primitive()
    assert one is not two and one.presentation_context_definition_list[0] is not two.presentation_context_definition_list[0]
    one.presentation_context_definition_list[0].transfer_syntax = ["1.2.840.10008.1.2"]  # as prefer_producible
    assert len(first.to_primitive().presentation_context_definition_list[0].transfer_syntax) > 1
    assert first.to_primitive().calling_ae_title == "A"
    requests.decoded(raws[1])
    requests.decoded(raws[2])
    assert len(requests._decoded) == 2 and raws[0] not in requests._decoded  # the oldest went
    big = DecodedRequests(largest=16)
    big.decoded(raws[0])
    assert not big._decoded


def described(primitive: A_ASSOCIATE) -> list:
    """What an acceptor reads of a request primitive, as plain values."""
    def values(obj):
        return {k: (list(map(str, v)) if isinstance(v, list) else v) for k, v in vars(obj).items()}
    return [primitive.calling_ae_title, primitive.called_ae_title, str(primitive.application_context_name),
            [values(cx) for cx in primitive.presentation_context_definition_list],
            [(type(item).__name__, values(item)) for item in primitive.user_information]]


def test_each_association_gets_its_own_copy_of_the_shared_request_primitive():
    ae = AE(ae_title="GETSCU")
    for sop_class in (GET, CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class)
    primitive = A_ASSOCIATE()
    primitive.calling_ae_title, primitive.called_ae_title = "GETSCU", "PACSBOX"
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    for i, cx in enumerate(ae.requested_contexts):
        cx.context_id = 2 * i + 1
    primitive.presentation_context_definition_list = ae.requested_contexts
    from pynetdicom.pdu_primitives import (ImplementationClassUIDNotification, MaximumLengthNotification,
                                           UserIdentityNegotiation)
    max_length, implementation, identity = MaximumLengthNotification(), ImplementationClassUIDNotification(), \
        UserIdentityNegotiation()
    max_length.maximum_length_received, implementation.implementation_class_uid = 16384, "1.2.3.4"
    identity.user_identity_type, identity.primary_field = 1, b"someone"
    primitive.user_information = [max_length, implementation, identity,
                                  *(build_role(c, scp_role=True) for c in (CTImageStorage, MRImageStorage))]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    raw = pdu.encode()
    shared = DecodedRequests().decoded(raw)
    fresh = A_ASSOCIATE_RQ()
    fresh.decode(raw)
    one, two = shared.to_primitive(), shared.to_primitive()
    assert described(one) == described(two) == described(fresh.to_primitive())
    one.presentation_context_definition_list[1].transfer_syntax = ["1.2.840.10008.1.2"]
    one.presentation_context_definition_list[2].scp_role = False
    one.presentation_context_definition_list[0].add_transfer_syntax("1.2.840.10008.1.2.5")  # in place
    one.user_information[0].maximum_length_received = 0
    one.user_information.append(identity)
    assert described(two) == described(shared.to_primitive()) == described(fresh.to_primitive())


# -- the appliance, with dcmtk's getscu and movescu ------------------------------------------------------

@pytest.fixture(scope="module")
def box(tmp_path_factory):
    data_dir = init_data_dir(tmp_path_factory.mktemp("getloop") / "data")
    scu_port = free_port()
    done = subprocess.run(CLI + ["modality", "add", "--data", str(data_dir), SCU, "127.0.0.1", str(scu_port)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    srv = Server(data_dir).start()
    srv.scu_port = scu_port
    yield srv
    srv.kill()


def dcmtk(*args, cwd=None):
    return subprocess.run([*map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def dataset_part(raw: bytes) -> bytes:
    """The data set of a Part 10 file (the file meta differs by who wrote it)."""
    end = 144 + int.from_bytes(raw[140:144], "little")
    return raw[end:]


def received(directory) -> dict[str, bytes]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.read_bytes()
            for p in directory.iterdir()}


def assert_arrived_as_stored(directory, uids: set[str], stored: dict[str, bytes]) -> None:
    """Every instance arrived in ``directory``, each data set byte for byte as the box stored it."""
    arrived = received(directory)
    assert set(arrived) == uids
    for uid, raw in arrived.items():
        assert dataset_part(raw) == dataset_part(stored[uid]), uid


def test_getscu_and_movescu_receive_a_study_with_a_large_object_byte_identical(box, tmp_path):
    files = write_study(tmp_path / "in", n_series=1, per_series=3, patient_id="LOOPBIG")
    big = make_instance("CT", patient_id="LOOPBIG", study_uid=pydicom.dcmread(files[0]).StudyInstanceUID)
    rows, cols = 1600, 2048  # 6.5 MB of pixels: many PDUs, several direct writes
    big.Rows, big.Columns = rows, cols
    big.PixelData = np.random.default_rng(7).integers(0, 4096, (rows, cols), dtype=np.uint16).tobytes()
    files.append(tmp_path / "in" / "big.dcm")
    big.save_as(files[-1], enforce_file_format=True)
    stored_ok = dcmtk("storescu", "-aet", SCU, "-aec", "PACSBOX", "127.0.0.1", box.dicom_port, *files)
    assert stored_ok.returncode == 0, stored_ok.stderr
    study = pydicom.dcmread(files[0]).StudyInstanceUID
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    stored = readback.stored(box.data_dir)
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    for attempt in range(2):  # the same request twice: the second association decodes nothing anew
        out = tmp_path / f"get{attempt}"
        out.mkdir()
        got = dcmtk("getscu", "-v", "-S", "+B", "-aet", SCU, "-aec", "PACSBOX", "-od", out, *keys,
                    "127.0.0.1", box.dicom_port)
        assert got.returncode == 0, got.stderr
        assert "Number of Completed Suboperations : 4" in got.stderr, got.stderr
        assert_arrived_as_stored(out, uids, stored)
    out = tmp_path / "move"
    out.mkdir()
    moved = dcmtk("movescu", "-v", "-S", "+B", "-aet", SCU, "-aec", "PACSBOX", "-aem", SCU, "--port", box.scu_port,
                  "-od", out, *keys, "127.0.0.1", box.dicom_port, cwd=out)
    assert moved.returncode == 0, moved.stderr
    assert "Received Final Move Response (Success)" in moved.stderr, moved.stderr
    assert_arrived_as_stored(out, uids, stored)

