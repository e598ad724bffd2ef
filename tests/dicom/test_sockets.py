"""The accepted-socket tuning keeps associations working: echo, store, release and abort (no timings here)."""
from __future__ import annotations

import socket

from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification

from appliance.dicom.sockets import TunedAssociationSocket, tune_accepted_socket
from tests.synth import make_instance


def _server(seen: list):
    def on_echo(event):
        transport = event.assoc.dul.socket
        seen.append((type(transport), transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        return 0x0000

    def on_store(event):
        seen.append(event.dataset.SOPInstanceUID)
        return 0x0000

    ae = AE(ae_title="TUNED")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    handlers = [(evt.EVT_CONN_OPEN, tune_accepted_socket), (evt.EVT_C_ECHO, on_echo), (evt.EVT_C_STORE, on_store)]
    return ae, ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)


def test_tuned_association_echoes_stores_and_releases():
    seen: list = []
    ae, server = _server(seen)
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(Verification)
        scu.add_requested_context(CTImageStorage)
        ds = make_instance("CT")
        for _ in range(2):  # a second association on the same server
            assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="TUNED")
            assert assoc.is_established
            for _ in range(5):
                assert assoc.send_c_echo().Status == 0x0000
            assert assoc.send_c_store(ds).Status == 0x0000
            assoc.release()
            assert assoc.is_released
        assert seen[0] == (TunedAssociationSocket, 1)
        assert seen.count(ds.SOPInstanceUID) == 2
    finally:
        server.shutdown()


def test_tuned_association_survives_an_abort():
    seen: list = []
    ae, server = _server(seen)
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="TUNED")
        assert assoc.send_c_echo().Status == 0x0000
        assoc.abort()
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="TUNED")
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()


def test_a_paused_association_reactor_never_takes_a_response():
    """pynetdicom pauses the reactor around send_c_*; a response arriving before the reactor notices the
    pause used to be taken as a request (and the sender timed out). The tuned queue refuses it to the
    reactor while paused, under its lock, and still hands it to the waiting sender."""
    import queue
    import threading

    from appliance.dicom.sockets import _DimseQueue

    messages = _DimseQueue()
    checkpoint = threading.Event()
    reactor = threading.Thread(target=lambda: None)
    messages.reactor, messages.checkpoint = reactor, checkpoint
    messages.put((1, "C-STORE-RSP"))
    taken: list = []

    def reactor_look():
        try:
            taken.append(messages.get(block=False))
        except queue.Empty:
            taken.append(None)

    reactor.run = reactor_look  # run the reactor's look in a thread that *is* the reactor
    reactor.start()
    reactor.join()
    assert taken == [None]  # paused: not for the reactor
    assert messages.get(block=True, timeout=1) == (1, "C-STORE-RSP")  # the sender gets it
    checkpoint.set()
    messages.put((1, "C-ECHO-RQ"))
    reactor2 = threading.Thread(target=lambda: taken.append(messages.get(block=False)))
    messages.reactor = reactor2
    reactor2.start()
    reactor2.join()
    assert taken[-1] == (1, "C-ECHO-RQ")  # running: the reactor serves requests as before
