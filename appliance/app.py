"""The composition root: the one place that builds every part and wires them together.

``build`` opens files and creates objects but starts nothing; ``Appliance.start``
starts threads and listeners in order, and ``stop`` stops them in reverse.
``serve`` runs until SIGTERM or SIGINT, telling systemd when it is ready.
"""
from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from . import sdnotify
from .archive import Archive, KeyStore
from .audit import AuditLog
from .config import Config
from .dicom.node import DicomNode
from .dicom.policy import AssociationPolicy
from .events import Events
from .index import Index
from .ingest import Ingestor
from .peers import PeerRegistry

log = logging.getLogger(__name__)


@dataclass
class Appliance:
    config: Config
    keys: KeyStore
    archive: Archive
    index: Index
    events: Events
    ingestor: Ingestor
    node: DicomNode
    audit: AuditLog
    web: Any = None  # a web.server.WebServer when the web app is built
    peers: Any = None  # appliance.peers.PeerRegistry: known DICOM peers
    worklist: Any = None  # appliance.worklist.Worklist: scheduled procedure steps
    forwarder: Any = None  # appliance.forward.Forwarder: the auto-forwarding queue
    reconciliation: Any = None  # the start-up appliance.reconcile.ReconcileReport (orphans, missing objects)
    backup: Any = None  # an appliance.backup.BackupService: run, status(), is_offsite()
    verifier: Any = None  # appliance.verify.Sampler: background sampled verification; .last is its report
    recycler: Any = None  # appliance.recycle.Recycler: frees space by deleting studies confirmed offsite
    # Extra start/stop pairs registered by other parts (importer, backup, ...), started in order.
    services: list[tuple[str, Callable[[], None], Callable[[], None]]] = field(default_factory=list)

    def start(self) -> None:
        removed = self.archive.clean_tmp()
        if removed:
            log.info("start-up: %d unfinished write(s) cleaned", removed)
        self.index.start()
        from .reconcile import reconcile  # index vs archive, before anything new arrives

        if self.recycler is not None:  # deletions of recycled studies cut short by a crash are not orphans
            self.recycler.finish_interrupted()
        self.reconciliation = reconcile(self.archive, self.index)
        self.node.start()
        if self.web is not None:
            self.web.start()
        for name, start, _stop in self.services:
            log.info("starting %s", name)
            start()

    def stop(self) -> None:
        for name, _start, stop in reversed(self.services):
            try:
                stop()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("stopping %s failed", name)
        if self.web is not None:
            self.web.stop()
        self.node.stop()
        self.index.close()


def allowed_callers_from(config: Config, peers=None) -> Callable[[], list[str]]:
    """The config's allowed_callers plus every registered peer's AE title (read per association).

    Both empty: any caller is accepted (a fresh box takes its first modality without set-up). As soon as
    either has an entry, only those callers are accepted: registering the first peer closes the door to
    unregistered ones, which `pacs-appliance modality add` says when it does so.
    """
    static = list(config.dicom.allowed_callers)
    if peers is None:
        return lambda: static
    return lambda: static + peers.allowed_callers()


def build(config: Config, with_web: bool = True) -> Appliance:
    from .dicom import tls as dicom_tls  # DICOM TLS settings are checked before anything is opened

    dicom_tls.check_listeners(config.dicom.port, config.dicom.tls_port, config.dicom.tls_only)
    dicom_tls_context = (dicom_tls.server_context(dicom_tls.TlsSettings.from_config(config))
                         if config.dicom.tls_port else None)
    keys = KeyStore(config.keys_dir)
    keyring = keys.load()
    archive = Archive(config.archive_dir, keyring, chunk_size=config.storage.chunk_kib * 1024)
    archive.create_dirs()
    index = Index.open(config.index_path, keyring.index_key, cache_mb=config.index.cache_mb,
                       case_sensitive_names=config.index.case_sensitive_names)
    events = Events()
    peers = PeerRegistry(index, config.dicom.ae_title,
                         tls_context=lambda: dicom_tls.client_context(dicom_tls.TlsSettings.from_config(config)))
    ingestor = Ingestor(archive, index, events, reserve_bytes=config.storage.reserve_mb * (1 << 20),
                        on_conflict=config.storage.on_conflict)
    d = config.dicom
    node = DicomNode(
        ae_title=d.ae_title, host=d.host, port=d.port,
        policy=AssociationPolicy(d.ae_title, allowed_callers_from(config, peers)),
        ingestor=ingestor, index=index, events=events, max_associations=d.max_associations,
        acse_timeout=d.acse_timeout, dimse_timeout=d.dimse_timeout, network_timeout=d.network_timeout,
        max_pdu=d.max_pdu, plain=not d.tls_only, tls_port=d.tls_port,
        tls_context=dicom_tls_context,
    )
    app = Appliance(config=config, keys=keys, archive=archive, index=index, events=events, ingestor=ingestor,
                    node=node, audit=AuditLog(index, events))
    app.services.append(("audit", app.audit.start, app.audit.stop))  # aggregates DICOM stores
    app.audit.install(node)  # C-FIND per association
    from .backup import BackupService
    from .backup.schedule import Scheduler

    app.backup = BackupService(config.backup, config.data_dir, keys, archive, index, app.audit)
    scheduler = Scheduler(app.backup, config.backup.window, config.backup.retries, config.backup.retry_seconds)
    app.services.append(("backup scheduler", scheduler.start, scheduler.stop))
    from .recycle import Recycler, RecycleSettings

    app.recycler = Recycler(RecycleSettings.from_config(config), archive, index, app.backup, app.audit,
                            config.data_dir / "recycle.lock")
    if app.recycler.settings.enabled:
        events.subscribe("instance_stored", app.recycler.on_instance_stored)
    app.services.append(("storage recycling", app.recycler.start, app.recycler.stop))
    if config.inbox.enabled:
        from .importer.watcher import Inbox, InboxSettings

        inbox = Inbox(InboxSettings.from_config(config), ingestor, app.audit)
        app.services.append(("inbox", inbox.start, inbox.stop))
    install_retrieval(app, peers)
    if config.integrity.sample_size > 0:
        from .verify import Sampler

        app.verifier = Sampler(archive, index, config.integrity.sample_size, config.integrity.interval_hours * 3600)
        app.services.append(("background verification", app.verifier.start, app.verifier.stop))
    if with_web:
        from web.server import WebServer  # web depends on appliance, never the reverse at import time

        app.web = WebServer(app, config.http.host, config.http.port)
    return app


def install_retrieval(app: Appliance, peers) -> None:
    """C-MOVE, C-GET, storage commitment, worklist, MPPS and forwarding (issue 3)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
    from pynetdicom import sop_class as sc

    from .dicom.commitment import CommitmentService
    from .dicom.get import handle_get
    from .dicom.move import handle_move
    from .dicom.mpps import MppsService
    from .dicom.permissions import store_if_permitted
    from .dicom.scu import ObjectSender
    from .dicom.worklist import handle_find_or_worklist
    from .forward import Forwarder, parse_rules
    from .worklist import Worklist

    config, node, index = app.config, app.node, app.index
    app.peers = peers
    app.worklist = Worklist(index, config.index.case_sensitive_names)
    sender = ObjectSender(app.archive)
    node.add_contexts([sc.PatientRootQueryRetrieveInformationModelMove, sc.StudyRootQueryRetrieveInformationModelMove,
                       sc.PatientRootQueryRetrieveInformationModelGet, sc.StudyRootQueryRetrieveInformationModelGet,
                       sc.ModalityWorklistInformationFind, sc.ModalityPerformedProcedureStep,
                       sc.StorageCommitmentPushModel], ALL_TRANSFER_SYNTAXES)
    # C-GET: the requestor takes the storage SCP role on its own association (role selection).
    node.add_contexts([cx.abstract_syntax for cx in AllStoragePresentationContexts], ALL_TRANSFER_SYNTAXES,
                      scu_role=True, scp_role=True)
    node.add_handler(evt.EVT_C_MOVE, handle_move, [index, peers, sender, app.audit])
    node.add_handler(evt.EVT_C_GET, handle_get, [index, peers, sender, app.audit])
    # pynetdicom binds one C-FIND handler: this one serves the worklist and passes Q/R finds to find.py.
    node.add_handler(evt.EVT_C_FIND, handle_find_or_worklist, [index, node.ae_title, app.worklist, peers])
    # Likewise for C-STORE: this checks the peer's store permission, then runs store.handle_store.
    node.add_handler(evt.EVT_C_STORE, store_if_permitted, [app.ingestor, peers])
    commitment = CommitmentService(app.archive, index.studies, peers, node.ae_title, app.audit)
    node.add_handler(evt.EVT_N_ACTION, commitment.handle_n_action)
    mpps = MppsService(index, app.audit)
    node.add_handler(evt.EVT_N_CREATE, mpps.handle_n_create)
    node.add_handler(evt.EVT_N_SET, mpps.handle_n_set)

    app.forwarder = Forwarder(index=index, archive=app.archive, peers=peers, ae_title=node.ae_title,
                              rules=parse_rules(config.forward.rules),
                              retry_initial=config.forward.retry_initial_seconds,
                              retry_max=config.forward.retry_max_seconds, max_attempts=config.forward.max_attempts,
                              timeout=config.dicom.dimse_timeout, audit=app.audit)
    if app.forwarder.rules:
        app.ingestor.record_hooks.append(app.forwarder.enqueue)  # same transaction as the instance rows
        app.events.subscribe("instance_stored", app.forwarder.wake)
    app.services.append(("forwarder", app.forwarder.start, app.forwarder.stop))
    expirer = PeriodicTask("worklist expiry", 3600, lambda: app.worklist.expire(config.worklist.expire_days))
    app.services.append(("worklist expiry", expirer.start, expirer.stop))


class PeriodicTask:
    """Run ``fn`` now and then every ``seconds`` in a daemon thread, logging (never raising) failures."""

    def __init__(self, name: str, seconds: float, fn: Callable[[], Any]):
        self.name, self.seconds, self.fn = name, seconds, fn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.fn()
            except Exception:  # noqa: BLE001 - try again next time
                log.exception("%s failed", self.name)
            if self._stop.wait(self.seconds):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def serve(app: Appliance, stop_event: threading.Event | None = None) -> None:
    """Start everything, notify systemd, and block until a signal or ``stop_event``."""
    stop_event = stop_event or threading.Event()

    def on_signal(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop_event.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    app.start()
    sdnotify.notify("READY=1")
    log.info("appliance ready")
    interval = sdnotify.watchdog_interval()
    try:
        while not stop_event.wait(interval or 1.0):
            if interval:
                sdnotify.notify("WATCHDOG=1")
    finally:
        sdnotify.notify("STOPPING=1")
        app.stop()
        log.info("appliance stopped")
