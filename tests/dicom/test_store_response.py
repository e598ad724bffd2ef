"""A C-STORE response sent directly (outbound.Outbound.send_msg) is the PDU pynetdicom would have sent."""
from __future__ import annotations

import queue

import pytest
from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF

from appliance.dicom.association_log import AssociationLog
from appliance.dicom.outbound import Outbound, SentStoreResponse
from appliance.dicom.outbound import store_response as command_set


def response(status=0x0000, sop_class="1.2.840.10008.5.1.4.1.1.2", sop_uid="1.2.3.4", message_id=7):
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_uid
    rsp.Status = status
    return rsp


def pynetdicom_pdus(rsp, context_id: int, max_pdu: int) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    out = b""
    for primitive in message.encode_msg(context_id, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        out += pdu.encode()
    return out


CASES = [
    dict(),  # even-length UIDs
    dict(sop_class="1.2.840.10008.5.1.4.1.1.2.1", sop_uid="1.2.3.45", message_id=65535),  # odd lengths
    dict(status=0xB000, sop_uid="2.25." + "9" * 59),  # a warning, a 64-character UID
    dict(status=0x0107, message_id=1),
]


@pytest.mark.parametrize("fields", CASES)
def test_command_set_matches_pynetdicoms(fields):
    rsp = response(**fields)
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    assert command_set(rsp) == encode(message.command_set, True, True)


def test_responses_with_more_than_the_usual_elements_go_through_pynetdicom():
    rsp = response(status=0xC000)
    rsp.ErrorComment = "refused"
    assert command_set(rsp) is None


class FakeAssociation:
    def __init__(self, max_pdu: int, watchers=()):
        self.dul = type("Dul", (), {"to_provider_queue": queue.Queue(), "send_pdu": None})()
        self.dimse = type("Dimse", (), {"maximum_pdu_size": max_pdu})()
        self.is_established = self.is_acceptor = True
        self.watchers = {evt.EVT_DIMSE_SENT: list(watchers)}

    def get_handlers(self, event):
        return self.watchers.get(event, [])


def sender(assoc):
    """The association's send_msg once an Outbound with a direct way out is installed; ``slow`` records the
    messages left to pynetdicom's encoding."""
    sent, slow = [], []
    assoc.dimse.send_msg = lambda p, cid: slow.append((p, cid))
    outbound = Outbound(assoc, lambda data: sent.append(bytes(data)) or True)
    outbound._send_encoded = lambda p, cid: slow.append((p, cid))
    outbound.install()
    return assoc.dimse.send_msg, sent, slow


@pytest.mark.parametrize("max_pdu", [16382, 0, 64])  # 64: the command set is split over PDUs
@pytest.mark.parametrize("fields", CASES)
def test_direct_pdus_are_pynetdicoms(fields, max_pdu):
    send, sent, slow = sender(FakeAssociation(max_pdu))
    rsp = response(**fields)
    send(rsp, 3)
    assert not slow and b"".join(sent) == pynetdicom_pdus(rsp, 3, max_pdu)


def test_what_cannot_be_encoded_here_goes_through_pynetdicoms_encoding():
    assoc = FakeAssociation(16382)
    send, sent, slow = sender(assoc)
    refused = response(status=0xA700)
    refused.ErrorComment = "the disk is full"
    send(refused, 1)
    request = C_STORE()  # a request (C-GET sub-operation), not a response
    request.MessageID = 1
    send(request, 1)
    assert not sent and [p for p, _cx in slow] == [refused, request]


def test_watchers_of_every_message_keep_pynetdicoms_path():
    assoc = FakeAssociation(16382, watchers=[(lambda event: None, [])])  # e.g. pynetdicom's debug logging
    assert Outbound.for_assoc(assoc) is None
    marked = lambda event: None  # noqa: E731 - a watcher that ignores pending responses only
    marked.ignores_pending_find = True
    assoc = FakeAssociation(16382, watchers=[(marked, [])])
    send, sent, slow = sender(assoc)
    send(response(), 1)  # it does not take a SentStoreResponse: pynetdicom encodes the response
    assert not sent and len(slow) == 1


def test_the_association_log_counts_direct_responses(monkeypatch):
    log = AssociationLog()
    assoc = FakeAssociation(16382, watchers=[(log.on_sent, [])])
    log.on_established(type("Event", (), {"assoc": assoc})())
    send, sent, slow = sender(assoc)
    seen = []

    def trigger(a, event, attrs):
        seen.append(attrs["message"])
        log.on_sent(type("Event", (), {"assoc": a, "message": attrs["message"]})())

    monkeypatch.setattr(evt, "trigger", trigger)
    send(response(), 1)
    send(response(status=0xB000), 1)
    send(response(status=0xA700), 1)
    assert [m.status for m in seen] == [0x0000, 0xB000, 0xA700]
    assert all(isinstance(m, SentStoreResponse) for m in seen)
    tally = log._tally(assoc)
    assert (tally.stored, tally.failed) == (2, 1) and len(sent) == 3 and not slow
