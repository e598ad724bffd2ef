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
    reconciliation: Any = None  # the start-up appliance.reconcile.ReconcileReport (orphans, missing objects)
    backup: Any = None  # an appliance.backup.BackupService: run, status(), is_offsite()
    # Extra start/stop pairs registered by other parts (importer, backup, ...), started in order.
    services: list[tuple[str, Callable[[], None], Callable[[], None]]] = field(default_factory=list)

    def start(self) -> None:
        removed = self.archive.clean_tmp()
        if removed:
            log.info("start-up: %d unfinished write(s) cleaned", removed)
        self.index.start()
        from .reconcile import reconcile  # index vs archive, before anything new arrives

        self.reconciliation = reconcile(self.archive)
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


def allowed_callers_from(config: Config) -> Callable[[], list[str]]:
    static = list(config.dicom.allowed_callers)
    return lambda: static


def build(config: Config, with_web: bool = True) -> Appliance:
    keys = KeyStore(config.keys_dir)
    keyring = keys.load()
    archive = Archive(config.archive_dir, keyring, chunk_size=config.storage.chunk_kib * 1024)
    archive.create_dirs()
    index = Index.open(config.index_path, keyring.index_key, cache_mb=config.index.cache_mb,
                       case_sensitive_names=config.index.case_sensitive_names)
    events = Events()
    ingestor = Ingestor(archive, index, events, reserve_bytes=config.storage.reserve_mb * (1 << 20),
                        on_conflict=config.storage.on_conflict)
    d = config.dicom
    node = DicomNode(
        ae_title=d.ae_title, host=d.host, port=d.port,
        policy=AssociationPolicy(d.ae_title, allowed_callers_from(config)),
        ingestor=ingestor, index=index, events=events, max_associations=d.max_associations,
        acse_timeout=d.acse_timeout, dimse_timeout=d.dimse_timeout, network_timeout=d.network_timeout,
        max_pdu=d.max_pdu,
    )
    app = Appliance(config=config, keys=keys, archive=archive, index=index, events=events, ingestor=ingestor,
                    node=node, audit=AuditLog(index, events))
    app.services.append(("audit", app.audit.start, app.audit.stop))  # aggregates DICOM stores
    from .backup import BackupService
    from .backup.schedule import Scheduler

    app.backup = BackupService(config.backup, config.data_dir, keys, archive, index, app.audit)
    scheduler = Scheduler(app.backup, config.backup.window, config.backup.retries, config.backup.retry_seconds)
    app.services.append(("backup scheduler", scheduler.start, scheduler.stop))
    if config.inbox.enabled:
        from .importer.watcher import Inbox, InboxSettings

        inbox = Inbox(InboxSettings.from_config(config), ingestor, app.audit)
        app.services.append(("inbox", inbox.start, inbox.stop))
    if with_web:
        from web.server import WebServer  # web depends on appliance, never the reverse at import time

        app.web = WebServer(app, config.http.host, config.http.port)
    return app


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
