"""A-ASSOCIATE-RQ PDUs decoded once per distinct byte string.

dcmtk's getscu proposes ~121 storage contexts with the SCP role in a 17 KB request, the same bytes
every time it runs; pynetdicom (3.0) decodes it into ~2,000 item and UID objects per association:
~10 % of the server CPU of a 100-instance C-GET after get_loop.py (py-spy, bench/README.md
"Session 7: C-GET"). Decoding is a pure function of the bytes, and pynetdicom only reads the
decoded PDU, so the decoded PDU of an identical request is shared. Its A-ASSOCIATE primitive, which
negotiation, ``get.prefer_producible`` and the policy then use and change, is built once too
(another ~1.3 ms per association: ~2,000 UID checks) and each association gets its own copy
(``_copy_request``, copies.py). Nothing about accepting or rejecting is cached: the calling and
called AE titles are part of the bytes, and every association is negotiated and judged anew from its own primitive.

``on_connection_open`` (EVT_CONN_OPEN) gives an association's DUL a ``_decode_pdu`` (an instance
attribute) that answers an A-ASSOCIATE-RQ from the cache; every other PDU, and every PDU of an
association with a handler watching received bytes or PDUs, is decoded by pynetdicom as before.
"""
from __future__ import annotations

import functools
import threading
from collections import OrderedDict

from pynetdicom import evt
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from .copies import fresh_copy

ASSOCIATE_RQ = 0x01
ENTRIES = 8  # distinct requests kept (one per kind of requestor: getscu, a viewer, a modality...)
LARGEST = 1 << 16  # bytes; a larger request is decoded every time (DICOM allows 128 contexts: ~20 KB)


def _copy_request(template: A_ASSOCIATE) -> A_ASSOCIATE:
    """A primitive equal to ``template`` sharing nothing a user may change: its presentation contexts and
    user information items are new objects (their values, UIDs, strings and numbers, are immutable)."""
    primitive = fresh_copy(template)  # its lists are replaced below
    primitive._presentation_context_definition_list = [
        fresh_copy(cx) for cx in template._presentation_context_definition_list]
    primitive._presentation_context_definition_results_list = []
    primitive._user_information = [fresh_copy(item) for item in template._user_information]
    return primitive


class DecodedRequests:
    def __init__(self, entries: int = ENTRIES, largest: int = LARGEST):
        self.entries, self.largest = entries, largest
        self._decoded: OrderedDict[bytes, A_ASSOCIATE_RQ] = OrderedDict()
        self._lock = threading.Lock()  # associations are set up on their own threads

    def decoded(self, raw: bytes) -> A_ASSOCIATE_RQ:
        """The decoded A-ASSOCIATE-RQ PDU ``raw`` (shared: read it, never change it)."""
        with self._lock:
            pdu = self._decoded.get(raw)
            if pdu is not None:
                self._decoded.move_to_end(raw)
                return pdu
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(raw)  # a malformed request raises here, as in pynetdicom, and is not kept
        pdu.to_primitive = functools.partial(_copy_request, A_ASSOCIATE_RQ.to_primitive(pdu))
        if len(raw) <= self.largest:
            with self._lock:
                self._decoded[raw] = pdu
                while len(self._decoded) > self.entries:
                    self._decoded.popitem(last=False)
        return pdu

    def on_connection_open(self, event) -> None:
        assoc = event.assoc
        dul = getattr(assoc, "dul", None)
        original = getattr(dul, "_decode_pdu", None)
        if not callable(original) or "_decode_pdu" in dul.__dict__ \
                or assoc.get_handlers(evt.EVT_DATA_RECV) or assoc.get_handlers(evt.EVT_PDU_RECV):
            return

        def decode_pdu(bytestream):
            if bytestream[:1] != bytes((ASSOCIATE_RQ,)):
                return original(bytestream)
            return self.decoded(bytes(bytestream)), "Evt6"  # pynetdicom's event for a received A-ASSOCIATE-RQ

        dul._decode_pdu = decode_pdu

    def handlers(self) -> list:
        return [(evt.EVT_CONN_OPEN, self.on_connection_open)]
