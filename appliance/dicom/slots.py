"""Association slots: ``max_associations`` counts associations, not TCP connections.

pynetdicom counts every acceptor thread against ``maximum_associations``, including
connections that have not sent an A-ASSOCIATE-RQ yet. Any host on the LAN could
then hold every slot with silent or slowly-sending connections and every modality
would be rejected ("local limit exceeded"), even with the allow-list on.

Here a slot is taken only when the association policy has accepted the caller
(``take``), so with the allow-list active only known callers ever hold one.
Connections still waiting for their A-ASSOCIATE-RQ are bounded apart
(``on_connection``): at most ``max_associations`` of them at once, and a new one
pushes out the oldest, so a flood of silent connections cannot keep a modality's
fresh connection from reaching its request (each also ends at ``acse_timeout``,
and a slow request is aborted by the per-PDU deadline in sockets.py).
pynetdicom's own count is raised out of the way (``pynetdicom_limit``).
"""
from __future__ import annotations

import logging
import socket
import threading
import time

log = logging.getLogger(__name__)

REJECT_BUSY = (0x02, 0x03, 0x02)  # A-ASSOCIATE-RJ transient, presentation layer, local limit exceeded (PS3.8 9.3.4)


def pynetdicom_limit(max_associations: int) -> int:
    """pynetdicom's ``maximum_associations``: above our slots plus the waiting connections, so it never
    decides first (it counts both, and a few rejected callers still finishing)."""
    return 2 * max_associations + 8


class AssociationSlots:
    def __init__(self, ae, max_associations: int):
        self.ae = ae
        self.max_associations = max_associations
        self._lock = threading.Lock()
        self.elsewhere = 0  # slots held by associations served in ingest worker processes (workers.py)

    def _held(self, exclude) -> int:
        """Slots held now, here (but ``exclude``'s) and in ingest workers; called under ``_lock``."""
        return sum(1 for a in self._acceptors(exclude) if getattr(a, "_pacs_slot", False)) + self.elsewhere

    def _acceptors(self, exclude) -> list:
        return [a for a in self.ae.active_associations if a.is_acceptor and a is not exclude]

    def take(self, assoc) -> tuple[int, int, int] | None:
        """Claim a slot for an accepted caller; a rejection when all are held."""
        with self._lock:
            if self._held(assoc) >= self.max_associations:
                return REJECT_BUSY
            assoc._pacs_slot = True
        return None

    def take_elsewhere(self) -> bool:
        """Claim a slot for an association handed to an ingest worker; False when all are held."""
        with self._lock:
            if self._held(None) >= self.max_associations:
                return False
            self.elsewhere += 1
        return True

    def release_elsewhere(self, count: int = 1) -> None:
        with self._lock:
            self.elsewhere = max(0, self.elsewhere - count)

    def on_connection(self, event) -> None:
        """EVT_CONN_OPEN: bound connections that have not asked for an association yet (oldest goes)."""
        assoc = event.assoc
        if not assoc.is_acceptor:
            return
        assoc._pacs_opened = time.monotonic()
        with self._lock:
            waiting = [a for a in self._acceptors(assoc)
                       if a.dul.state_machine.current_state == "Sta2" and not getattr(a, "_pacs_evicted", False)]
            if len(waiting) < self.max_associations:
                return
            oldest = min(waiting, key=lambda a: getattr(a, "_pacs_opened", 0.0))
            oldest._pacs_evicted = True
        address = getattr(oldest.requestor, "address", "?")
        log.warning("DICOM connection from %s closed before its association request: %d connections "
                    "were waiting for one (max_associations) and a new one arrived", address,
                    self.max_associations)
        transport = getattr(oldest.dul, "socket", None)
        sock = getattr(transport, "socket", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)  # its read ends (Evt17) and pynetdicom cleans up
        except OSError:
            pass
