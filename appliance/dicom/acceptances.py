"""Accepting an association: presentation contexts negotiated, and the A-ASSOCIATE-AC encoded, once per
distinct request.

An acceptor's answer to an A-ASSOCIATE-RQ is a pure function of the request (its AE titles, presentation
contexts after the box's EVT_REQUESTED handlers, SCP/SCU role selection) and of the node's supported
contexts and user information, which do not change once it serves. pynetdicom (3.0) works it out anew for
each association: for getscu's 121 storage contexts with role selection its negotiation took ~1.15 ms and
encoding the A-ASSOCIATE-AC ~0.8 ms, of an association that costs the box ~10 ms from accept to release
(bench/README.md, "Session 8"), and dcmtk's tools and a modality send the same request every time.

``on_connection_open`` (EVT_CONN_OPEN) gives an association's ACSE its own ``_negotiate_as_acceptor`` and
its DUL its own ``_send`` (instance attributes):

- a request whose only extended negotiation is role selection, which pynetdicom would accept (called AE
  title, association limit), is answered from the acceptance kept for it: copies of the result contexts
  and role items, then pynetdicom's own ``send_accept`` and events, as its negotiation does;
- the A-ASSOCIATE-AC for such a request is encoded once and its bytes kept with the acceptance;
- anything else (user identity, SOP class or asynchronous operations negotiation, a rejection) goes to
  pynetdicom's negotiation unchanged, and so does every association of a DUL or ACSE already replaced.

Which requests the box accepts is not cached: the policy (EVT_REQUESTED) judges each association, and an
association it rejects never reaches negotiation.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from pynetdicom import _config, evt
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor, negotiate_unrestricted

from .copies import fresh_copy

log = logging.getLogger("pynetdicom.acse")  # the lines pynetdicom's own negotiation logs, under its name
ENTRIES = 16  # distinct requests kept (a few per kind of requestor: getscu, a viewer, each modality)


@dataclass
class Acceptance:
    """What the node answers one distinct request: templates, never handed out (each association gets copies)."""

    contexts: list[PresentationContext]
    roles: list[SCP_SCU_RoleSelectionNegotiation]
    encoded: bytes | None = field(default=None)  # the A-ASSOCIATE-AC, once one was sent


class Acceptances:
    def __init__(self, entries: int = ENTRIES):
        self.entries = entries
        self._kept: OrderedDict[tuple, Acceptance] = OrderedDict()
        self._lock = threading.Lock()  # associations are negotiated on their own threads
        self.negotiated = 0  # requests negotiated by pynetdicom's functions here (tests)

    def handlers(self) -> list:
        return [(evt.EVT_CONN_OPEN, self.on_connection_open)]

    def on_connection_open(self, event) -> None:
        assoc = event.assoc
        acse, dul = getattr(assoc, "acse", None), getattr(assoc, "dul", None)
        if not assoc.is_acceptor or acse is None or dul is None or "_negotiate_as_acceptor" in acse.__dict__ \
                or "_send" in dul.__dict__:
            return
        pynetdicoms_negotiation, pynetdicoms_send = acse._negotiate_as_acceptor, dul._send
        answer: list[Acceptance] = []  # the acceptance this association's A-ASSOCIATE-AC is sent from

        def negotiate() -> None:
            acceptance = self._acceptance(assoc)
            if acceptance is None:
                pynetdicoms_negotiation()
                return
            answer.append(acceptance)
            self._accept(assoc, acceptance)

        def send(pdu) -> None:
            if not answer or type(pdu) is not A_ASSOCIATE_AC or dul.socket is None:
                pynetdicoms_send(pdu)
                return
            acceptance = answer.pop()
            if acceptance.encoded is None:
                acceptance.encoded = pdu.encode()  # the same bytes for every association that is sent it
            dul.socket.send(acceptance.encoded)
            evt.trigger(assoc, evt.EVT_PDU_SENT, {"pdu": pdu})

        acse._negotiate_as_acceptor = negotiate
        dul._send = send

    def _acceptance(self, assoc) -> Acceptance | None:
        """The acceptance for this association's request, or None when pynetdicom must negotiate it."""
        ae, requestor = assoc.ae, assoc.requestor
        primitive = requestor.primitive
        if any(type(item) is not SCP_SCU_RoleSelectionNegotiation for item in requestor.extended_negotiation):
            return None  # user identity, SOP class or asynchronous operations items: handlers decide
        if ae.require_calling_aet or primitive.called_ae_title != assoc.acceptor.ae_title.strip() \
                or sum(1 for a in ae.active_associations if a.is_acceptor) > ae.maximum_associations:
            return None  # pynetdicom rejects it
        roles = {uid: (item.scu_role, item.scp_role) for uid, item in requestor.role_selection.items()}
        contexts = primitive.presentation_context_definition_list
        key = (primitive.calling_ae_title, primitive.called_ae_title, _config.UNRESTRICTED_STORAGE_SERVICE,
               tuple((cx.context_id, cx.abstract_syntax, tuple(cx.transfer_syntax)) for cx in contexts),
               tuple(sorted(roles.items())))
        with self._lock:
            acceptance = self._kept.get(key)
            if acceptance is not None:
                self._kept.move_to_end(key)
                return acceptance
        negotiation = negotiate_unrestricted if _config.UNRESTRICTED_STORAGE_SERVICE else negotiate_as_acceptor
        results, role_items = negotiation(contexts, assoc.acceptor.supported_contexts, roles)
        acceptance = Acceptance(results, role_items)
        with self._lock:
            self.negotiated += 1
            self._kept[key] = acceptance
            while len(self._kept) > self.entries:
                self._kept.popitem(last=False)
        return acceptance

    @staticmethod
    def _accept(assoc, acceptance: Acceptance) -> None:
        """What pynetdicom's ``_negotiate_as_acceptor`` does with an accepted request, from copies."""
        acse, requestor, acceptor = assoc.acse, assoc.requestor, assoc.acceptor
        requestor.ae_title = requestor.primitive.calling_ae_title
        acceptor._common_ext = {}  # no SOP Class Common Extended items were proposed
        results = [fresh_copy(cx) for cx in acceptance.contexts]
        assoc._accepted_cx = {cx.context_id: cx for cx in results if cx.result == 0x00}
        assoc._rejected_cx = [cx for cx in results if cx.result != 0x00]
        for role in acceptance.roles:
            acceptor.add_negotiation_item(fresh_copy(role))
        log.info("Accepting Association")
        acse.send_accept()
        evt.trigger(assoc, evt.EVT_ACCEPTED, {})
        assoc.is_established = True
        evt.trigger(assoc, evt.EVT_ESTABLISHED, {})
