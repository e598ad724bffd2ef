"""Hostile connections to the DICOM port of a real `pacs-appliance serve` (issue 14, items 1 and 2).

Each attack is bounded: at most 8 connections, a few seconds each, loopback only. The box runs with
2-second timeouts so that "within the timeout" is quick to see; every wait is a polling deadline.
"""
from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification
from pynetdicom.transport import AddressInformation

from tests.helpers import Server, init_data_dir, wait_until

MIB = 1 << 20
TIMEOUT = 2  # [dicom] acse_timeout and network_timeout of the box under attack


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    data_dir = init_data_dir(tmp_path_factory.mktemp("hostile") / "data")
    srv = Server(data_dir, env={"PACS_DICOM_ACSE_TIMEOUT": str(TIMEOUT), "PACS_DICOM_NETWORK_TIMEOUT": str(TIMEOUT),
                                "PACS_DICOM_MAX_ASSOCIATIONS": "4",
                                "PACS_DICOM_ALLOWED_CALLERS": "MODALITY,ATTACKER"}).start()
    yield srv
    srv.kill()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def echo(port: int, calling: str = "MODALITY") -> str:
    """'ok', 'rejected' or 'no association'."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSBOX")
    if not assoc.is_established:
        return "rejected" if assoc.is_rejected else "no association"
    try:
        return "ok" if assoc.send_c_echo().Status == 0 else "failed"
    finally:
        assoc.release()


def associate_rq(calling: str = "ATTACKER") -> bytes:
    """A valid A-ASSOCIATE-RQ PDU asking for Verification, encoded."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = "PACSBOX"
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 0)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 0)
    context = build_context(Verification)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def raw_association(port: int) -> socket.socket:
    """A TCP connection on which the box has accepted our association (its A-ASSOCIATE-AC read)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(associate_rq())
    header = sock.recv(6, socket.MSG_WAITALL)
    assert header[:1] == b"\x02", f"no A-ASSOCIATE-AC: {header!r}"
    length = struct.unpack(">L", header[2:6])[0]
    assert len(sock.recv(length, socket.MSG_WAITALL)) == length
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the box closed the connection (after an A-ABORT, or straight away)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def test_claimed_pdu_lengths_allocate_nothing(box):
    """2 connections before association and 2 after each announce a 512 MiB PDU: RSS grows < 64 MiB,
    and the box aborts each one at once (a PDU longer than it allows)."""
    assert echo(box.dicom_port) == "ok"  # warm the node up before the baseline
    baseline = rss(box.proc.pid)
    claim = struct.pack(">L", 512 * MIB)
    connections = []
    try:
        for _ in range(2):  # an A-ASSOCIATE-RQ header: the length is read before anything else
            sock = socket.create_connection(("127.0.0.1", box.dicom_port), timeout=10)
            sock.sendall(b"\x01\x00" + claim)
            connections.append(sock)
        for _ in range(2):  # a P-DATA-TF header within an accepted association (max PDU 262144)
            sock = raw_association(box.dicom_port)
            sock.sendall(b"\x04\x00" + claim)
            connections.append(sock)
        peak = [baseline]

        def all_closed():
            peak.append(rss(box.proc.pid))
            return all(closed_by_peer(s) for s in connections)

        try:
            wait_until(all_closed, 10, what="the box to abort the connections")
        except TimeoutError:
            pass
        assert max(peak) - baseline < 64 * MIB, f"RSS grew by {(max(peak) - baseline) // MIB} MiB"
        assert all(closed_by_peer(s) for s in connections), "a connection that claimed 512 MiB is still open"
    finally:
        for sock in connections:
            sock.close()
    log = box.log()
    assert "announced a 536870912-byte PDU, more than the 1048576 bytes allowed before association" in log
    assert "announced a 536870912-byte PDU, more than the 262150 bytes allowed by the maximum PDU size" in log
    assert echo(box.dicom_port) == "ok"


def test_a_pdu_must_arrive_within_the_timeout_however_it_is_spaced(box):
    """An A-ASSOCIATE-RQ sent one byte every 0.4 s (each recv well inside the 2 s timeout) is aborted
    ~2 s after it began, not kept open for as long as bytes trickle in."""
    pdu = associate_rq()
    sock = socket.create_connection(("127.0.0.1", box.dicom_port), timeout=10)
    started = time.monotonic()
    sent = 0
    try:
        def dropped():
            nonlocal sent
            if closed_by_peer(sock):
                return True
            try:
                sock.send(pdu[sent:sent + 1])
                sent += 1
            except OSError:
                return True
            return False

        wait_until(dropped, 10, interval=0.4, what="the box to drop the slow association request")
        assert time.monotonic() - started < TIMEOUT + 4
        assert sent < len(pdu)
    finally:
        sock.close()
    assert "did not complete a" in box.log()


def test_an_association_without_dimse_progress_is_aborted(box):
    """Within an association, one-byte P-DATA fragments of a never-finished command every 0.4 s (each
    a whole PDU) do not count as activity: the association ends ~network_timeout after it began."""
    sock = raw_association(box.dicom_port)
    started = time.monotonic()
    fragment = struct.pack(">BBLLBB", 0x04, 0, 7, 3, 1, 0x01) + b"\x00"  # PDV: context 1, command, not last
    try:
        def aborted():
            if closed_by_peer(sock):
                return True
            try:
                sock.send(fragment)
            except OSError:
                return True
            return False

        wait_until(aborted, 12, interval=0.4, what="the box to end the association without progress")
        assert time.monotonic() - started < TIMEOUT + 6
    finally:
        sock.close()


def test_unidentified_connections_cannot_take_the_association_slots(box):
    """8 connections (twice max_associations) that send one byte of an association request and then
    nothing: the registered caller still gets an association; the oldest of them are pushed out."""
    silent = [socket.create_connection(("127.0.0.1", box.dicom_port), timeout=10) for _ in range(8)]
    try:
        for sock in silent:
            sock.send(b"\x01")
        try:  # give the box time to take them all in (before the fix they stayed, holding every slot)
            wait_until(lambda: sum(closed_by_peer(s) for s in silent) >= 4, 3, what="the oldest to be closed")
        except TimeoutError:
            pass
        assert echo(box.dicom_port) == "ok"
    finally:
        for sock in silent:
            sock.close()
    assert "were waiting for one (max_associations)" in box.log()


def test_known_callers_hold_the_slots_and_the_limit_still_holds(box):
    """max_associations (4) established associations: the next caller is rejected (local limit), and
    gets in again once one is released.

    A slot is the box's until its association thread has ended, a moment after the caller's release()
    returns (the A-RELEASE-RP is sent first); under load that moment is long enough for an immediate
    next association to find every slot still held. So each association is asked for until the box
    accepts it (a slot left by an earlier test's echo ends within the deadline), and the one after the
    release likewise; the fifth, asked while four are held, must be refused for the limit."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)

    def associate():
        assoc = ae.associate("127.0.0.1", box.dicom_port, ae_title="PACSBOX")
        return assoc if assoc.is_established else None

    held = []
    try:
        for _ in range(4):
            held.append(wait_until(associate, 30, interval=0.2, what="a free association slot"))
        refusals = box.log().count("association slots are in use")
        assert echo(box.dicom_port) == "rejected"
        wait_until(lambda: box.log().count("association slots are in use") > refusals, 30,
                   what="the box to log the refusal as the max_associations limit")
    finally:
        if held:
            held.pop().release()
    try:
        wait_until(lambda: echo(box.dicom_port) == "ok", 30, interval=0.2, what="the released slot to be free")
    finally:
        for a in held:
            a.release()
