"""Accepting an association from what was kept for the same request (appliance/dicom/acceptances.py).

A requestor that sends the same A-ASSOCIATE-RQ again gets the same A-ASSOCIATE-AC, byte for byte what
pynetdicom answers on its own, and the same accepted contexts and roles, without a second negotiation;
a request that differs, or carries negotiation items whose answer handlers decide, is negotiated anew.
Real associations on loopback: the box's node against pynetdicom requestors and a bare pynetdicom acceptor.
"""
from __future__ import annotations

import pytest
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, StudyRootQueryRetrieveInformationModelGet, Verification
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from appliance.dicom import echo, store
from appliance.dicom.node import DicomNode, NodeSettings
from appliance.dicom.policy import AssociationPolicy
from appliance.events import Events

ASSOCIATE_AC = 0x02


@pytest.fixture
def node():
    n = DicomNode(NodeSettings(host="127.0.0.1", port=0), policy=AssociationPolicy("PACSBOX", list),
                  events=Events())
    n.register(echo.service())
    n.register(store.service(ingestor=None))
    n.start()
    yield n
    n.stop()


def requestor(*syntaxes) -> AE:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, list(syntaxes) or [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(MRImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)  # not served: rejected context
    return ae


def associate(ae: AE, port: int, ext_neg=None):
    """(the A-ASSOCIATE-AC's bytes, the accepted contexts as plain values), association released."""
    received = []

    def keep_ac(event):
        if event.data[:1] == bytes((ASSOCIATE_AC,)):
            received.append(bytes(event.data))

    assoc = ae.associate("127.0.0.1", port, ae_title="PACSBOX", ext_neg=ext_neg,
                         evt_handlers=[(evt.EVT_DATA_RECV, keep_ac)])
    assert assoc.is_established
    contexts = sorted((cx.context_id, cx.abstract_syntax, tuple(cx.transfer_syntax), cx.as_scu, cx.as_scp)
                      for cx in assoc.accepted_contexts)
    rejected = sorted(cx.context_id for cx in assoc.rejected_contexts)
    assoc.release()
    return received[0], contexts, rejected


def bare_acceptor(node: DicomNode):
    """A pynetdicom acceptor with the node's contexts and nothing of the box's."""
    ae = AE(ae_title="PACSBOX")
    ae.maximum_pdu_size = node.ae.maximum_pdu_size
    for cx in node.ae.supported_contexts:
        ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax, scu_role=cx.scu_role, scp_role=cx.scp_role)
    return ae.start_server(("127.0.0.1", 0), block=False)


def test_the_same_request_is_accepted_again_from_what_was_kept_byte_for_byte_as_pynetdicom(node):
    port = node.bound_address[1]
    roles = [build_role(CTImageStorage, scp_role=True)]
    first = associate(requestor(), port, roles)
    again = associate(requestor(), port, roles)
    assert node.acceptances.negotiated == 1
    assert again == first
    assert first[2], "the Q/R GET context the node does not serve is rejected"
    bare = bare_acceptor(node)
    try:
        assert associate(requestor(), bare.server_address[1], roles) == first
    finally:
        bare.shutdown()


def test_a_different_request_is_negotiated_anew(node):
    port = node.bound_address[1]
    explicit = associate(requestor(ExplicitVRLittleEndian), port)
    implicit = associate(requestor(ImplicitVRLittleEndian), port)
    assert node.acceptances.negotiated == 2
    ct = {cx[1]: cx[2] for cx in explicit[1]}[CTImageStorage]
    assert ct == (ExplicitVRLittleEndian,) and {cx[1]: cx[2] for cx in implicit[1]}[CTImageStorage] == (
        ImplicitVRLittleEndian,)


def test_user_identity_goes_to_pynetdicoms_negotiation(node):
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 1
    identity.primary_field = b"someone"
    port = node.bound_address[1]
    associate(requestor(), port, [identity])
    associate(requestor(), port, [identity])
    assert node.acceptances.negotiated == 0
