"""The DICOM node: one pynetdicom AE serving every DIMSE service of the appliance.

Each DIMSE service is a ``registry.DimseService`` declared by its own module
(echo.py, store.py, find.py, ...), with its collaborators passed in; the
composition root ``register``s them before ``start``. The registry is the one
table of SOP classes, roles and handlers: it refuses a second handler for the
same DIMSE event and SOP class, which pynetdicom would silently let replace the
first. Notification events (association opened, DIMSE message received, ...)
may have any number of watchers (``watch``).

The node listens on the plain DICOM port, on a DICOM TLS port (``tls.py``), or on
both: every listener serves the same services with the same handlers, association
policy and ``max_associations`` budget, since they are acceptors of one AE.
"""
from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Callable

from pynetdicom import AE, _config, evt

from ..events import Events
from .acceptances import Acceptances
from .association_log import reason_text
from .policy import REJECT_CALLING_AE, AssociationPolicy
from .registry import DimseService, ServiceRegistry
from .slots import AssociationSlots, pynetdicom_limit
from .sockets import tune_accepted_socket
from .outbound import on_connection_open as outbound_on_connection_open
from .inline_store import on_connection_open as inline_store_on_connection_open

log = logging.getLogger(__name__)

# Never let pynetdicom log identifiers: they carry patient names and IDs.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
# Accept storage of SOP classes pynetdicom does not list (new or private ones).
_config.UNRESTRICTED_STORAGE_SERVICE = True
# EVT_CONN_OPEN handlers every acceptor binds first, in this order (outbound writes to the tuned socket, and
# inline_store reads from it and answers through outbound): the node's and an ingest worker's (workers.py).
CONNECTION_TUNING = ((evt.EVT_CONN_OPEN, tune_accepted_socket), (evt.EVT_CONN_OPEN, outbound_on_connection_open),
                     (evt.EVT_CONN_OPEN, inline_store_on_connection_open))


def free_slot_of_silent_connection(event) -> None:
    """EVT_CONN_CLOSE: a peer that connected and closed without an A-ASSOCIATE-RQ (a port probe,
    a health check) would otherwise hold an association slot for ``acse_timeout`` seconds, and
    with a few of them every real caller is rejected. Wake the waiting acceptor so it ends now."""
    assoc = event.assoc
    if assoc.is_acceptor and assoc.dul.state_machine.current_state == "Sta2":
        assoc.dul.to_user_queue.put(None)  # read as "no A-ASSOCIATE-RQ came": pynetdicom cleans up


class _ContextList(list):
    """The server's supported presentation contexts, shared by every association instead of copied.

    pynetdicom deep-copies them for every new association (transport.RequestHandler). A deepcopy of
    ~170 storage contexts x 45 transfer syntax UIDs cost 40-200 ms on this hardware, which every C-ECHO
    and C-FIND association paid before answering; a copy of each context (copies.py) still cost
    ~0.6 ms of every association's ~4.5 ms of CPU (bench/README.md, "Session 8"). Nothing changes
    them once the node serves: pynetdicom only reads an acceptor's supported contexts, when it
    negotiates (``presentation.negotiate_as_acceptor`` / ``negotiate_unrestricted`` build new result
    contexts), and the box reads the accepted ones. So each association gets the same contexts, in a
    tuple: code that tried to add or remove one for a single association would fail loudly instead of
    changing every association's.
    """

    def __deepcopy__(self, memo):
        return tuple(self)


@dataclass(frozen=True)
class NodeSettings:
    """The node's ``[dicom]`` settings (config.py documents each)."""

    ae_title: str = "PACSBOX"
    host: str = "0.0.0.0"
    port: int = 11112
    max_associations: int = 16
    acse_timeout: float = 30
    dimse_timeout: float = 60
    network_timeout: float = 120
    max_pdu: int = 262144
    tls_port: int = 0
    plain: bool = True  # False: TLS only

    def apply_to(self, ae: AE) -> None:
        """The timeouts, maximum PDU and called-AE check of an acceptor (the node's, an ingest worker's)."""
        ae.acse_timeout = self.acse_timeout
        ae.dimse_timeout = self.dimse_timeout
        ae.network_timeout = self.network_timeout
        ae.maximum_pdu_size = self.max_pdu
        ae.connection_timeout = self.acse_timeout  # C-MOVE sub-associations: TCP connect and TLS handshake
        ae.require_called_aet = True

    @classmethod
    def from_config(cls, config) -> NodeSettings:
        d = config.dicom
        return cls(ae_title=d.ae_title, host=d.host, port=d.port, max_associations=d.max_associations,
                   acse_timeout=d.acse_timeout, dimse_timeout=d.dimse_timeout, network_timeout=d.network_timeout,
                   max_pdu=d.max_pdu, tls_port=d.tls_port, plain=not d.tls_only)


class DicomNode:
    def __init__(self, settings: NodeSettings, *, policy: AssociationPolicy, events: Events,
                 tls_context: ssl.SSLContext | None = None):
        s = settings
        if s.tls_port and tls_context is None:
            raise ValueError("a TLS port needs an SSL context (appliance.dicom.tls.server_context)")
        if not s.plain and not s.tls_port:
            raise ValueError("the node needs a plain or a TLS listener")
        self.ae_title = s.ae_title
        self.address = (s.host, s.port)
        self.tls_address = (s.host, s.tls_port) if s.tls_port else None
        self.tls_context = tls_context
        self.plain = s.plain
        self.policy = policy
        self.events = events
        self.ae = AE(ae_title=s.ae_title)
        self.slots = AssociationSlots(self.ae, s.max_associations)  # counts accepted associations only
        self.ae.maximum_associations = pynetdicom_limit(s.max_associations)
        s.apply_to(self.ae)
        self._server = None  # the plain listener
        self._tls_server = None
        self.registry = ServiceRegistry()  # the DIMSE services: the node's conformance table
        self.acceptances = Acceptances()  # each distinct request negotiated and its answer encoded once
        self._watchers: list[tuple[Any, Callable, list]] = [
            *((event, handler, []) for event, handler in CONNECTION_TUNING),
            (evt.EVT_CONN_OPEN, self.slots.on_connection, []),
            *((event, handler, []) for event, handler in self.acceptances.handlers()),
            (evt.EVT_CONN_CLOSE, free_slot_of_silent_connection, []),
            (evt.EVT_REQUESTED, self._on_requested, []),
            (evt.EVT_ESTABLISHED, self._on_established, []),
        ]
        self._handlers: list[tuple[Any, Callable, list]] = []  # what the listeners were given, set by start
        self.workers = None  # IngestWorkers (workers.py) when storage associations go to worker processes

    def hand_off_to(self, workers) -> None:
        """Offer each plain TCP connection to ``workers`` (workers.IngestWorkers) first: those that ask for
        storage and verification only are served in worker processes; everything else stays here."""
        self._check_not_started()
        self.workers = workers

    def register(self, service: DimseService) -> None:
        """Serve ``service``: accept its presentation contexts and bind its handlers at ``start``.

        Raises registry.DuplicateHandler when another service already handles one of its events
        for one of its SOP classes."""
        self._check_not_started()
        self.registry.register(service)
        for uid, transfer_syntaxes, scu_role, scp_role in service.contexts():
            self.ae.add_supported_context(uid, transfer_syntaxes, scu_role=scu_role, scp_role=scp_role)

    def watch(self, event: Any, handler: Callable, args: list | None = None) -> None:
        """Call ``handler(event, *args)`` on a notification event (any number of watchers per event)."""
        self._check_not_started()
        if not getattr(event, "is_notification", False):
            raise ValueError(f"{event.name} is a DIMSE request: serve it with a DimseService (register)")
        self._watchers.append((event, handler, list(args or [])))

    def _check_not_started(self) -> None:
        if self._server is not None or self._tls_server is not None:
            raise RuntimeError("register services and watchers before the node starts")

    # -- association policy -------------------------------------------------
    def _on_requested(self, event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        host = assoc.requestor.address
        rejection = self.policy.check(called, calling, host)
        sock = getattr(assoc.dul.socket, "socket", None)
        if rejection is None and isinstance(sock, ssl.SSLSocket):
            der = sock.getpeercert(binary_form=True)
            subject = dict(x[0] for x in (sock.getpeercert() or {}).get("subject", ()))
            why = self.policy.check_certificate(calling, hashlib.sha256(der).hexdigest() if der else None,
                                                subject.get("commonName"),
                                                required=self.tls_context.verify_mode == ssl.CERT_REQUIRED)
            if why is not None:
                log.warning("association from %s at %s over TLS rejected: %s", calling, host, why)
                rejection = REJECT_CALLING_AE
        elif rejection is not None:
            log.warning("association from %s at %s to %s rejected: %s", calling, host, called,
                        reason_text(rejection[1], rejection[2]))
        if rejection is None:
            rejection = self.slots.take(assoc)
            if rejection is None:
                return
            log.warning("association from %s at %s rejected: all %d association slots are in use "
                        "([dicom] max_associations)", calling, host, self.slots.max_associations)
        assoc.acse.send_reject(*rejection)
        assoc.is_rejected = True
        self.events.emit("association_rejected", calling_ae=calling, called_ae=called, address=host,
                         reason=rejection[2])
        assoc.kill()

    def _on_established(self, event) -> None:
        assoc = event.assoc
        self.events.emit("association_accepted", calling_ae=assoc.requestor.ae_title.strip(),
                         address=assoc.requestor.address)

    # -- life cycle -----------------------------------------------------------
    def start(self) -> None:
        # pynetdicom's standard handlers describe every PDU and DIMSE message (copying each dataset
        # to do so) even when its logger drops the lines: bind them only if they would be shown.
        _config.LOG_HANDLER_LEVEL = "standard" if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO) \
            else "none"
        contexts = _ContextList(self.ae.supported_contexts)
        self._handlers = self._watchers + self.registry.evt_handlers()
        if self.plain and self.workers is not None:
            self.workers.start()
            self._server = self._start_hand_off_server(contexts)
            log.info("DICOM node %s listening on %s:%d", self.ae_title, *self.bound_address)
        elif self.plain:
            self._server = self.ae.start_server(self.address, block=False, evt_handlers=self._handlers,
                                                contexts=contexts)
            log.info("DICOM node %s listening on %s:%d", self.ae_title, *self.bound_address)
        if self.tls_address is not None:
            from .tls import start_tls_server  # here: an ingest worker imports this module, never serves TLS

            try:
                self._tls_server = start_tls_server(self.ae, self.tls_address, self.tls_context, self._handlers,
                                                    contexts, handshake_timeout=self.ae.acse_timeout,
                                                    max_handshakes=self.slots.max_associations,
                                                    on_failure=self._on_tls_failure)
            except BaseException:
                self.stop()  # do not leave the plain port open when the TLS one cannot be
                raise
            clients = {ssl.CERT_NONE: "not asked for", ssl.CERT_OPTIONAL: "checked when sent",
                       ssl.CERT_REQUIRED: "required"}[self.tls_context.verify_mode]
            log.info("DICOM node %s listening with TLS on %s:%d (client certificates %s)", self.ae_title,
                     *self.tls_bound_address, clients)

    def _start_hand_off_server(self, contexts):
        """pynetdicom's non-blocking ``start_server``, with the listener that offers connections to workers."""
        from .workers import HandOffServer

        try:
            server = self.ae.make_server(self.address, contexts=contexts, evt_handlers=self._handlers,
                                         server_class=HandOffServer)
        except BaseException:
            self.workers.stop()
            raise
        server.workers = self.workers
        threading.Thread(target=server.serve_forever, name="AcceptorServer (hand-off)", daemon=True).start()
        self.ae._servers.append(server)
        return server

    def _on_tls_failure(self, address: str, reason: str) -> None:
        self.events.emit("association_rejected", calling_ae="", called_ae="", address=address,
                         reason=f"TLS handshake failed: {reason}")

    @property
    def bound_address(self) -> tuple[str, int]:
        """The plain listener's address (the TLS one's when the node serves TLS only)."""
        server = self._server if self._server is not None else self._tls_server
        if server is None:
            return self.address if self.plain else self.tls_address
        return server.server_address[:2]

    def listening(self) -> list[str]:
        """The listeners whose socket is open, e.g. ["port 11112", "TLS port 2762"] (for health checks:
        looking at the sockets, since a TCP probe would make pynetdicom log an aborted association)."""
        return [f"{label}port {server.server_address[1]}"
                for label, server in (("", self._server), ("TLS ", self._tls_server))
                if server is not None and server.socket.fileno() >= 0]

    @property
    def tls_bound_address(self) -> tuple[str, int] | None:
        if self._tls_server is None:
            return self.tls_address
        return self._tls_server.server_address[:2]

    def active_associations(self) -> list[dict]:
        here = [
            {"calling_ae": a.requestor.ae_title.strip(), "address": a.requestor.address}
            for a in self.ae.active_associations
            if a.is_acceptor and a.is_established
        ]
        return here + (self.workers.active_associations() if self.workers is not None else [])

    def stop(self) -> None:
        stopped = False
        for name in ("_server", "_tls_server"):
            server = getattr(self, name)
            if server is not None:
                server.shutdown()
                setattr(self, name, None)
                stopped = True
        if self.workers is not None:
            self.workers.stop()
        if stopped:
            log.info("DICOM node stopped")
