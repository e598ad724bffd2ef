"""C-GET sub-operations whose C-STORE-RSPs the association thread reads itself (outbound.InlineResponses):
every way a requestor can behave mid-C-GET still ends as pynetdicom's own path would (no timings here)."""
from __future__ import annotations

import threading

import pytest
from helpers import wait_until
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet

from appliance.dicom.outbound import InlineResponses, receive_store_responses
from appliance.dicom.sockets import tune_accepted_socket
from tests.synth import make_instance

GET = StudyRootQueryRetrieveInformationModelGet
COUNT = 5


@pytest.fixture(autouse=True)
def no_pynetdicom_log_handlers(monkeypatch):
    """As the box runs (node.py): pynetdicom's standard handlers watch every PDU, which keeps its own path."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")


class GetServer:
    """A pynetdicom C-GET SCP tuned like the box's listener: COUNT CT instances per C-GET."""

    def __init__(self, dimse_timeout: float = 30):
        self.datasets = [make_instance("CT") for _ in range(COUNT)]
        self.closed = threading.Event()
        self.inline: list[bool] = []
        self.ae = AE(ae_title="GETSCP")
        self.ae.dimse_timeout = dimse_timeout
        self.ae.add_supported_context(GET)
        self.ae.add_supported_context(CTImageStorage, scu_role=False, scp_role=True)
        handlers = [(evt.EVT_CONN_OPEN, tune_accepted_socket), (evt.EVT_C_GET, self.on_get),
                    (evt.EVT_CONN_CLOSE, lambda _event: self.closed.set())]
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)

    def on_get(self, event):
        receive_store_responses(event.assoc)
        self.inline.append(isinstance(event.assoc.dimse.get_msg, InlineResponses))
        yield COUNT
        for ds in self.datasets:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    def close(self):
        self.server.shutdown()


@pytest.fixture
def get_server():
    server = GetServer()
    yield server
    server.close()


def requestor(on_store, dimse_timeout: float = 30):
    ae = AE(ae_title="GETSCU")
    ae.dimse_timeout = dimse_timeout
    ae.add_requested_context(GET)
    ae.add_requested_context(CTImageStorage)
    return ae, [build_role(CTImageStorage, scp_role=True)], [(evt.EVT_C_STORE, on_store)]


def get_all(server, on_store, dimse_timeout: float = 30):
    ae, roles, handlers = requestor(on_store, dimse_timeout)
    assoc = ae.associate("127.0.0.1", server.server.server_address[1], ae_title="GETSCP", ext_neg=roles,
                         evt_handlers=handlers)
    assert assoc.is_established
    query = make_instance("CT")
    query.QueryRetrieveLevel = "STUDY"
    statuses = [status.Status for status, _identifier in assoc.send_c_get(query, GET) if status]
    return assoc, statuses


def test_every_instance_arrives_and_the_association_releases(get_server):
    received = []
    for _ in range(2):  # the DUL thread reads again after a C-GET: a second one on a new association
        assoc, statuses = get_all(get_server, lambda event: received.append(event.dataset.SOPInstanceUID) or 0)
        assert statuses[-1] == 0x0000 and statuses.count(0xFF00) == COUNT
        assoc.release()
        assert assoc.is_released
    assert received == [ds.SOPInstanceUID for ds in get_server.datasets] * 2
    assert get_server.inline == [True, True]


def test_a_cancel_between_sub_operations_is_seen_by_the_handler(get_server):
    """The C-CANCEL-RQ comes before the C-STORE-RSP it follows: read by the waiting thread, it goes to the
    DUL thread, which registers the cancel and then reads the response."""
    received = []

    def on_store(event):
        received.append(event.dataset.SOPInstanceUID)
        if len(received) == 1:
            cx = next(cx for cx in event.assoc.accepted_contexts if cx.abstract_syntax == GET)
            event.assoc.send_c_cancel(1, cx.context_id)
        return 0x0000

    assoc, statuses = get_all(get_server, on_store)
    assert statuses[-1] == 0xFE00 and len(received) == 1
    assoc.release()


def test_a_peer_that_aborts_mid_get_ends_the_association(get_server):
    def on_store(event):
        if event.dataset.SOPInstanceUID == get_server.datasets[1].SOPInstanceUID:
            event.assoc.abort()
        return 0x0000

    # pynetdicom's C-GET SCU waits its DIMSE timeout for a response after it aborted itself
    assoc, _statuses = get_all(get_server, on_store, dimse_timeout=3)
    assert assoc.is_aborted
    assert get_server.closed.wait(60)  # the server read the A-ABORT (its DUL thread handled it) and closed
    again, statuses = get_all(get_server, lambda event: 0)  # and serves the next C-GET in full
    assert statuses[-1] == 0x0000 and statuses.count(0xFF00) == COUNT
    again.release()


def test_a_peer_that_never_answers_is_aborted_after_the_dimse_timeout():
    server = GetServer(dimse_timeout=0.5)
    answer = threading.Event()
    try:
        def on_store(event):
            if event.dataset.SOPInstanceUID == server.datasets[1].SOPInstanceUID:
                answer.wait(60)  # holds the C-STORE-RSP back until the server has given up
            return 0x0000

        ae, roles, handlers = requestor(on_store)
        assoc = ae.associate("127.0.0.1", server.server.server_address[1], ae_title="GETSCP", ext_neg=roles,
                             evt_handlers=handlers)
        query = make_instance("CT")
        query.QueryRetrieveLevel = "STUDY"
        finished = threading.Event()

        def run():
            list(assoc.send_c_get(query, GET))
            finished.set()

        threading.Thread(target=run, daemon=True).start()
        assert server.closed.wait(60)  # the server aborted the association: no answer within its timeout
        answer.set()
        assert finished.wait(60)
        wait_until(lambda: not assoc.is_established, 60, what="the requestor to see the abort")
    finally:
        answer.set()
        server.close()
