"""One INFO line per association when it ends, and one per refused association: what an admin
watching ``journalctl -fu`` expects to see when a modality sends a study or is turned away.

    association from US1 at 10.0.0.5 released after 4.2 s: stored 120, failed 0
    association from WS1 at 10.0.0.9 released after 0.3 s: C-FIND STUDY x3
    association from WS2 at 10.0.0.9 to PACSBOX rejected: calling AE title not recognised (...)

Counts come from the DIMSE messages of the association (notification events, attached
with ``DicomNode.watch``); a C-FIND's level is read from its identifier's one element
(0008,0052). Lines carry AE titles, addresses, counts and levels, never patient data.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter

from pydicom.filereader import read_dataset
from pynetdicom import evt

from .status import STORE_OK
from .outbound import SentStoreResponse

log = logging.getLogger(__name__)
QUERY_RETRIEVE_LEVEL = 0x00080052
# A-ASSOCIATE-RJ diagnostics (PS3.8 9.3.4), source 1 (service user) and 3 (service provider)
REJECT_REASONS = {
    (1, 0x01): "no reason given", (1, 0x02): "application context not supported",
    (1, 0x03): "calling AE title not recognised (not a registered peer or allowed caller)",
    (1, 0x07): "called AE title not recognised (not this node's AE title)",
    (3, 0x01): "no free association slot (max_associations reached)", (3, 0x02): "protocol version not supported",
    (2, 0x02): "protocol version not supported",
}
_REQUESTS = {"C_ECHO_RQ": "C-ECHO", "C_FIND_RQ": "C-FIND", "C_GET_RQ": "C-GET", "C_MOVE_RQ": "C-MOVE",
             "N_ACTION_RQ": "N-ACTION", "N_CREATE_RQ": "N-CREATE", "N_SET_RQ": "N-SET", "N_GET_RQ": "N-GET",
             "N_EVENT_REPORT_RQ": "N-EVENT-REPORT"}


def reason_text(source: int, diagnostic: int) -> str:
    return REJECT_REASONS.get((source, diagnostic), f"source {source}, reason 0x{diagnostic:02X}")


class _Tally:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.stored = self.failed = self.sent = self.send_failed = 0
        self.ending = "closed"


class AssociationLog:
    """Watchers for ``DicomNode.watch``: ``handlers()``."""

    def __init__(self) -> None:
        self._tallies: dict[int, _Tally] = {}
        self._lock = threading.Lock()

    def handlers(self) -> list:
        return [(evt.EVT_ESTABLISHED, self.on_established), (evt.EVT_DIMSE_RECV, self.on_received),
                (evt.EVT_DIMSE_SENT, self.on_sent), (evt.EVT_RELEASED, self.on_released),
                (evt.EVT_ABORTED, self.on_aborted), (evt.EVT_CONN_CLOSE, self.on_closed),
                (evt.EVT_REJECTED, self.on_rejected)]

    def _tally(self, assoc) -> _Tally | None:
        with self._lock:
            return self._tallies.get(id(assoc))

    def on_established(self, event) -> None:
        if event.assoc.is_acceptor:
            with self._lock:
                self._tallies[id(event.assoc)] = _Tally()

    def on_received(self, event) -> None:
        tally = self._tally(event.assoc)
        if tally is None:
            return
        kind = type(event.message).__name__
        if getattr(event.message.command_set, "CommandField", None) == 0x8001:  # C-STORE-RSP: our C-STOREs
            # of a C-GET, answered by the requestor (pynetdicom's message, or outbound.StoreResponseMessage)
            ok = int(event.message.command_set.Status) in STORE_OK
            tally.sent += ok
            tally.send_failed += not ok
        elif kind in _REQUESTS:
            name = _REQUESTS[kind]
            if kind == "C_FIND_RQ":
                name += _level(event)
            tally.counts[name] += 1

    def on_sent(self, event) -> None:
        tally = self._tally(event.assoc)
        if tally is None:
            return
        message = event.message
        if isinstance(message, SentStoreResponse):  # sent directly (outbound.py)
            status = message.status
        elif type(message).__name__ == "C_STORE_RSP":
            status = message.command_set.Status
        else:
            return
        ok = int(status) in STORE_OK
        tally.stored += ok
        tally.failed += not ok

    on_received.command_values_only = True  # reads command_set values only (outbound.receive_store_responses)
    on_sent.ignores_pending_find = True  # C-STOREs only: C-FIND's PendingSender may skip pynetdicom (pending.py)
    on_sent.takes_sent_store_response = True  # outbound.py may send C-STORE responses directly

    def on_released(self, event) -> None:
        tally = self._tally(event.assoc)
        if tally is not None:
            tally.ending = "released"

    def on_aborted(self, event) -> None:
        tally = self._tally(event.assoc)
        if tally is not None:
            tally.ending = "aborted"

    def on_closed(self, event) -> None:
        with self._lock:
            tally = self._tallies.pop(id(event.assoc), None)
        if tally is None:
            return
        assoc = event.assoc
        parts = []
        if tally.stored or tally.failed:
            parts.append(f"stored {tally.stored}, failed {tally.failed}")
        parts += [f"{name} x{n}" for name, n in sorted(tally.counts.items())]
        if tally.sent or tally.send_failed:
            parts.append(f"sent {tally.sent}, failed {tally.send_failed}")
        log.info("association from %s at %s %s after %.1f s: %s", assoc.requestor.ae_title.strip(),
                 assoc.requestor.address, tally.ending, time.monotonic() - tally.started,
                 "; ".join(parts) or "nothing done")

    def on_rejected(self, event) -> None:
        """pynetdicom's own rejections (too many associations, ...); the policy's are logged by node.py."""
        assoc = event.assoc
        rj = getattr(assoc.acceptor, "primitive", None)
        source, diagnostic = getattr(rj, "result_source", 0) or 0, getattr(rj, "diagnostic", 0) or 0
        log.warning("association from %s at %s rejected: %s", assoc.requestor.ae_title.strip() or "?",
                    assoc.requestor.address, reason_text(int(source), int(diagnostic)))


def _level(event) -> str:
    """' STUDY' (the C-FIND's Query/Retrieve Level), or '' when the identifier does not say."""
    try:
        cx = event.assoc._accepted_cx[event.message.context_id]  # the context gives the identifier's encoding
        ts = cx.transfer_syntax[0]
        data = event.message.data_set
        data = data.getvalue() if hasattr(data, "getvalue") else bytes(data or b"")
        ds = read_dataset(io.BytesIO(data), ts.is_implicit_VR, ts.is_little_endian,
                          specific_tags=[QUERY_RETRIEVE_LEVEL])
        level = str(ds.get("QueryRetrieveLevel", "") or "").strip()
    except Exception:  # noqa: BLE001 - a log detail must never break the association
        return ""
    return f" {level}" if level.isalpha() and len(level) <= 16 else ""
