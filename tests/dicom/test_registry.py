"""The DIMSE service registry: one handler per (event, SOP class), refused when claimed twice.

pynetdicom keeps one handler per intervention event and lets a second one replace the
first without a word; the node used to bind C-STORE and C-FIND handlers that app.py then
replaced. These tests build the services from the real service modules (their handlers
are never called here) and the appliance's real node.
"""
from __future__ import annotations

import pytest
from pynetdicom import evt
from pynetdicom.sop_class import (
    CTImageStorage,
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from appliance.dicom import echo, find, store, worklist
from appliance.dicom.node import DicomNode, NodeSettings
from appliance.dicom.policy import AssociationPolicy
from appliance.dicom.registry import DimseService, DuplicateHandler, Handler, ServiceRegistry, dispatch
from appliance.events import Events


def node() -> DicomNode:
    return DicomNode(NodeSettings(host="127.0.0.1", port=0), policy=AssociationPolicy("PACSBOX", list),
                     events=Events())


def test_a_second_handler_for_the_same_dimse_event_and_sop_class_is_refused():
    n = node()
    n.register(find.service(index=None, ae_title="PACSBOX"))
    other = DimseService("another Q/R", (StudyRootQueryRetrieveInformationModelFind,),
                         (Handler(evt.EVT_C_FIND, lambda event: None),))
    with pytest.raises(DuplicateHandler, match="EVT_C_FIND"):
        n.register(other)
    assert [s.name for s in n.registry.services] == ["Query/Retrieve FIND"]  # the refused one left no trace


def test_storage_takes_every_sop_class_so_any_other_c_store_handler_is_refused():
    registry = ServiceRegistry()
    registry.register(store.service(ingestor=None))
    with pytest.raises(DuplicateHandler, match="EVT_C_STORE"):
        registry.register(DimseService("CT only", (CTImageStorage,), (Handler(evt.EVT_C_STORE, print),)))
    with pytest.raises(DuplicateHandler):  # nor a second storage service
        registry.register(store.service(ingestor=None))


def test_notification_events_are_watched_not_registered():
    n = node()
    with pytest.raises(ValueError, match="DimseService"):
        n.watch(evt.EVT_C_STORE, print)
    with pytest.raises(ValueError, match="notification"):
        n.register(DimseService("bad", (CTImageStorage,), (Handler(evt.EVT_RELEASED, print),)))
    n.watch(evt.EVT_RELEASED, print)  # any number of watchers per notification event
    n.watch(evt.EVT_RELEASED, print)


def test_services_sharing_an_event_get_one_dispatcher_and_single_ones_a_direct_binding():
    registry = ServiceRegistry()
    registry.register(echo.service())
    registry.register(find.service(index=None, ae_title="PACSBOX"))
    registry.register(worklist.service(worklist=None))
    bound = {event: (fn, args) for event, fn, args in registry.evt_handlers()}
    assert len(bound) == len(registry.evt_handlers()), "one pynetdicom handler per event"
    assert bound[evt.EVT_C_ECHO] == (echo.handle_echo, [])  # nothing between pynetdicom and the handler
    fn, (table,) = bound[evt.EVT_C_FIND]
    assert fn is dispatch
    assert table[ModalityWorklistInformationFind].fn is worklist.handle_worklist_find
    assert table[StudyRootQueryRetrieveInformationModelFind].fn is find.handle_find


def test_the_appliance_node_serves_each_dimse_event_once_and_lists_its_sop_classes(tmp_path):
    from helpers import init_data_dir

    from appliance.app import Parts
    from appliance.config import load

    parts = Parts(load(init_data_dir(tmp_path / "data")))
    try:
        registry = parts.node.registry
        events = [event for event, _fn, _args in registry.evt_handlers()]
        assert len(events) == len(set(events))
        assert {evt.EVT_C_ECHO, evt.EVT_C_STORE, evt.EVT_C_FIND, evt.EVT_C_MOVE, evt.EVT_C_GET, evt.EVT_N_ACTION,
                evt.EVT_N_CREATE, evt.EVT_N_SET} == set(events)
        roles = {(row.sop_class, row.role) for row in registry.rows()}  # the conformance table
        assert ("Modality Performed Procedure Step", ("N-CREATE", "N-SET")) in {
            (row.service, row.messages) for row in registry.rows()}
        assert (ModalityWorklistInformationFind, "SCP") in roles
        assert (StudyRootQueryRetrieveInformationModelGet, "SCP") in roles
        assert (CTImageStorage, "SCP") in roles and (CTImageStorage, "SCU") in roles  # C-GET sends on their assoc
    finally:
        parts.close()


def test_associations_share_the_supported_contexts_and_negotiation_leaves_them_as_they_were():
    """node._ContextList: every association reads the same supported contexts (no per-association copy),
    in a tuple, and negotiating (here with SCP/SCU role selection) changes none of them."""
    from pynetdicom import AE, build_role
    from pynetdicom.sop_class import Verification

    n = node()
    n.register(echo.service())
    n.register(store.service(ingestor=None))
    seen = []
    n.watch(evt.EVT_ESTABLISHED, lambda event: seen.append(event.assoc.acceptor.supported_contexts))

    def state(contexts):
        return [(cx.abstract_syntax, tuple(cx.transfer_syntax), cx.scu_role, cx.scp_role) for cx in contexts]

    before = state(n.ae.supported_contexts)
    n.start()
    try:
        requestor = AE(ae_title="SCU")
        requestor.add_requested_context(Verification)
        requestor.add_requested_context(CTImageStorage)
        for roles in ([], [build_role(CTImageStorage, scp_role=True)]):
            assoc = requestor.associate("127.0.0.1", n.bound_address[1], ae_title="PACSBOX", ext_neg=roles)
            assert assoc.is_established
            assoc.release()
    finally:
        n.stop()
    assert len(seen) == 2 and isinstance(seen[0], tuple)
    assert all(a is b for a, b in zip(seen[0], seen[1]))
    assert state(seen[1]) == before
