"""The composition root: the one place that knows how to build every part and wire them together.

``Parts`` builds each part of one data directory on first use, with what it needs, so a
CLI command takes only what it touches. ``build`` takes every part and returns the
``Appliance``; building opens files and creates objects but starts nothing.
``Appliance.start`` starts threads and listeners in order, and ``stop`` stops them in
reverse. ``serve`` runs until SIGTERM or SIGINT, telling systemd when it is ready.
"""
from __future__ import annotations

import gc
import logging
import signal
import ssl
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable

from . import malloc, sdnotify
from .archive import Archive, KeyStore
from .config import Config
from .errors import ApplianceError
from .events import Events
from .index import Index
from .ingest import Ingestor
from .lifecycle import Named, PeriodicTask, Service
from .records.audit import AuditLog

if TYPE_CHECKING:  # imported where they are built: a CLI command loads only the parts it uses
    from web.server import WebServer

    from .backup import BackupService
    from .dicom.node import DicomNode
    from .importer.failed import FailedImports
    from .index.reconcile import ReconcileReport, Reconciler
    from .ingest.versions import Versions
    from .records.peers import PeerRegistry
    from .records.worklist import Worklist
    from .services.forward import Forwarder
    from .services.recycle import Recycler
    from .services.verify import Sampler

__all__ = ["Appliance", "Parts", "PeriodicTask", "allowed_callers_from", "build", "serve"]
log = logging.getLogger(__name__)
QUICK_CHECK_AT_START_BYTES = 16 << 20  # a bigger index file is quick-checked after the node listens


def _check_index_file(path, key: bytes) -> None:
    """SQLite's quick check of the index file; raises IndexNeedsRebuild (exit 7) when it finds damage."""
    from .index import health
    from .index.rebuild import IndexNeedsRebuild

    problems = health.check(path, key)
    if problems:
        raise IndexNeedsRebuild(
            "; ".join(problems) + f". Stop the service and run `pacs-appliance index rebuild --data {path.parent}` "
            "(it rebuilds the index from the archive and its latest index snapshot)")
    log.info("start-up: the index file passed SQLite's quick check")


def _refuse_an_empty_database(url: str, allow_insecure: bool, archive_has_objects: Callable[[], bool]) -> None:
    """A PostgreSQL database without an index under an archive with objects is not this box's (a wrong
    [index] url, a recreated database): migrating it would make an empty index there, and reconciliation
    would then move every object aside. Refuses (exit 7) as a missing index file does, changing nothing."""
    from .index.postgres import PostgresIndexDatabase, redact
    from .index.rebuild import IndexNeedsRebuild

    db = PostgresIndexDatabase(url, allow_insecure)
    try:
        if db.holds_index() or not archive_has_objects():  # the archive only asked about an empty database
            return
    finally:
        db.close()
    raise IndexNeedsRebuild(
        f"the PostgreSQL database {redact(url)} ([index] url) holds no index, but the archive holds objects. "
        "Nothing was changed. Check that [index] url (or PACS_INDEX_URL) names this box's database, or restore "
        "the database's newest backup on its server")


@dataclass
class Appliance:
    """Every part of one running appliance, built by ``build``: always set, except the two that are
    optional by configuration (``verifier``, ``web``). Parts that are idle by configuration (a
    forwarder without rules, a recycler switched off) are still there, so callers never probe."""

    config: Config
    keys: KeyStore
    archive: Archive
    index: Index
    events: Events
    audit: AuditLog
    ingestor: Ingestor
    peers: PeerRegistry  # known DICOM peers
    worklist: Worklist  # scheduled procedure steps
    forwarder: Forwarder  # the auto-forwarding queue (idle without [forward] rules)
    backup: BackupService  # run, status(), is_offsite()
    recycler: Recycler  # frees space by deleting studies confirmed offsite (idle unless [storage] recycle)
    node: DicomNode
    failed_imports: FailedImports  # the encrypted quarantine of failed imports: list, retry, export, delete
    versions: Versions  # replaced and held versions of instances: list, restore, discard
    verifier: Sampler | None = None  # background sampled verification; None when [integrity] sample_size = 0
    web: WebServer | None = None  # None when built with_web=False (tests, benchmarks)
    services: list[Service] = field(default_factory=list)  # started in order after the node and web
    reconciliation: ReconcileReport | None = None  # the start-up index/archive check (a big box: once it finished)
    failure: BaseException | None = None  # set by a background part that must stop the appliance (serve raises it)
    reconciler: Reconciler | None = None  # set by start
    deferred_index_check: Callable[[], None] | None = None  # run in a thread by start (Parts.index)

    def start(self) -> None:
        removed = self.archive.clean_tmp()
        if removed:
            log.info("start-up: %d unfinished write(s) cleaned", removed)
        self.index.start()
        from .index.reconcile import Reconciler  # index vs archive: before the node on a small box, beside it on a big one
        from .index.unfinished_batches import LOCK_NAME, none_in_flight

        self.recycler.finish_interrupted()  # deletions of recycled studies cut short by a crash are not orphans
        self.reconciler = Reconciler(self.archive, self.index, on_failure=self.fail,
                                     on_done=lambda report: setattr(self, "reconciliation", report))
        with none_in_flight(self.config.data_dir / LOCK_NAME) as idle:  # a CLI correction may be running
            self.reconciliation = self.reconciler.run_now(idle)
        self.node.start()
        if self.web is not None:
            self.web.start()
        self.reconciler.start()
        if self.deferred_index_check is not None:
            threading.Thread(target=self._check_later, name="index quick check", daemon=True).start()
        for service in self.services:
            log.info("starting %s", service.name)
            service.start()

    def _check_later(self) -> None:
        try:
            self.deferred_index_check()
        except ApplianceError as exc:
            log.critical("%s", exc)
            self.fail(exc)
        except Exception:  # noqa: BLE001 - reported; the next start checks again
            log.exception("the index file's quick check could not run")

    def fail(self, exc: BaseException) -> None:
        """A background part found the appliance must not go on (``serve`` stops it and raises ``exc``)."""
        self.failure = exc

    def stop(self) -> None:
        if self.reconciler is not None:
            self.reconciler.stop()
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("stopping %s failed", service.name)
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


class Parts:
    """The parts of one data directory, each built on first use with the parts it needs.

    ``build`` takes all of them for ``serve``; a CLI command only those it touches
    (``user list`` opens the keys and the index, not the DICOM node and its TLS files).
    Nothing here starts a thread or opens a port. ``close`` closes the index if it was opened.
    """

    def __init__(self, config: Config, starting: bool = False):
        self.config = config
        self.starting = starting  # serve: check the index's pages, and rebuild it if so configured
        self.deferred_index_check: Callable[[], None] | None = None  # a big index's quick check, after start

    @cached_property
    def keys(self) -> KeyStore:
        return KeyStore(self.config.keys_dir)

    @cached_property
    def keyring(self):
        return self.keys.load()

    @cached_property
    def archive(self) -> Archive:
        archive = Archive(self.config.archive_dir, self.keyring, chunk_size=self.config.storage.chunk_kib * 1024)
        archive.create_dirs()
        return archive

    @cached_property
    def index(self) -> Index:
        s = self.config.index
        if s.url:  # PostgreSQL: the database server keeps it (no local snapshots or rebuild yet)
            _refuse_an_empty_database(s.url, s.allow_insecure, lambda: self.archive.has_objects())
            return Index.open(self.config.index_path, self.keyring.index_key, cache_mb=s.cache_mb,
                              case_sensitive_names=s.case_sensitive_names, url=s.url, allow_insecure=s.allow_insecure)
        from .index.rebuild import ensure_index  # refuses to open a lost or damaged index over a full archive

        # SQLite's quick check reads every page (~1 s per 100 MB idle, far more on a busy box): on a big index
        # it runs after the node listens (``deferred_index_check``), so start-up stays seconds at any size.
        path = self.config.index_path
        check_now = self.starting and not (path.exists() and path.stat().st_size > QUICK_CHECK_AT_START_BYTES)
        if self.starting and not check_now:
            self.deferred_index_check = lambda: _check_index_file(path, self.keyring.index_key)
        ensure_index(path, self.archive, self.keyring, self.config.archive_dir,
                     quick_check=check_now, auto_rebuild=self.starting and s.auto_rebuild,
                     snapshot_keep=s.snapshot_keep)
        from .services.snapshots import take

        def snapshot_first(db) -> None:  # a migration is the riskiest write an index sees
            take(db, self.keyring.index_key, self.archive, self.config.data_dir, s.snapshot_keep)

        return Index.open(self.config.index_path, self.keyring.index_key, cache_mb=s.cache_mb,
                          case_sensitive_names=s.case_sensitive_names, before_migrations=snapshot_first)

    @cached_property
    def events(self) -> Events:
        return Events()

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.index, self.events)

    @cached_property
    def ingestor(self) -> Ingestor:
        """The one ingest path, with what hangs on it wherever it runs (serve, import): the audit
        log's per-study store entries and the forwarding jobs, queued in the instance's transaction."""
        s = self.config.storage
        from .index.unfinished_batches import LOCK_NAME

        ingestor = Ingestor(self.archive, self.index, self.events, reserve_bytes=s.reserve_mb * (1 << 20),
                            on_conflict=s.on_conflict, on_patient_change=s.on_patient_change,
                            batch_lock=self.config.data_dir / LOCK_NAME)
        _ = self.audit  # subscribes to instance_stored
        from .ingest import audit_replacements

        self.events.subscribe("instance_replaced", audit_replacements(self.audit))
        if self.forwarder.rules:
            ingestor.record_hooks.append(self.forwarder.enqueue)
            self.events.subscribe("instance_stored", self.forwarder.wake)
        return ingestor

    @cached_property
    def peers(self) -> PeerRegistry:
        from .dicom import tls as dicom_tls
        from .records.peers import PeerRegistry

        config = self.config
        return PeerRegistry(self.index, config.dicom.ae_title,
                            tls_context=lambda: dicom_tls.client_context(dicom_tls.TlsSettings.from_config(config)))

    @cached_property
    def worklist(self) -> Worklist:
        from .records.worklist import Worklist

        return Worklist(self.index, self.config.index.case_sensitive_names)

    @cached_property
    def forwarder(self) -> Forwarder:
        from .services.forward import Forwarder, parse_rules

        f = self.config.forward
        return Forwarder(index=self.index, archive=self.archive, peers=self.peers, ae_title=self.config.dicom.ae_title,
                         rules=parse_rules(f.rules), retry_initial=f.retry_initial_seconds,
                         retry_max=f.retry_max_seconds, max_attempts=f.max_attempts,
                         timeout=self.config.dicom.dimse_timeout, audit=self.audit)

    @cached_property
    def commitment(self):
        """Storage commitment: the N-ACTION handler and the task that retries undelivered reports."""
        from .dicom.commitment import CommitmentService

        d = self.config.dicom
        return CommitmentService(self.archive, self.index, self.peers, d.ae_title, self.audit,
                                 timeout=d.dimse_timeout, retry_initial=d.commitment_retry_initial_seconds,
                                 retry_max=d.commitment_retry_max_seconds)

    @cached_property
    def backup(self) -> BackupService:
        from .backup import BackupService

        return BackupService(self.config.backup, self.config.data_dir, self.keys, self.archive, self.index,
                             self.audit)

    def _snapshot_now(self) -> None:
        """A sealed index snapshot now (the embedded index only: PostgreSQL's is its server's)."""
        if self.config.index.url:
            return
        from .services.snapshots import take

        take(self.index.db, self.keyring.index_key, self.archive, self.config.data_dir, self.config.index.snapshot_keep)

    @cached_property
    def recycler(self) -> Recycler:
        from .services.recycle import Recycler, RecycleSettings

        recycler = Recycler(RecycleSettings.from_config(self.config), self.archive, self.index, self.backup,
                            self.audit, self.config.data_dir / "recycle.lock", after_run=self._snapshot_now)
        if recycler.settings.enabled:
            self.events.subscribe("instance_stored", recycler.on_instance_stored)
        return recycler

    @cached_property
    def failed_imports(self) -> FailedImports:
        from .importer.failed import FailedImports

        return FailedImports(self.archive.quarantine(), self.ingestor, self.audit,
                             int(self.config.inbox.zip_member_max_mb) << 20)

    @cached_property
    def versions(self) -> Versions:
        from .ingest.versions import Versions

        return Versions(self.index, self.archive, self.audit)

    @cached_property
    def verifier(self) -> Sampler | None:
        s = self.config.integrity
        if s.sample_size <= 0:
            return None
        from .services.verify import Sampler

        return Sampler(self.archive, self.index, s.sample_size, s.interval_hours * 3600)

    @cached_property
    def dicom_tls_context(self) -> ssl.SSLContext | None:
        """The DICOM TLS listener's context (None without a TLS port); checks the listener settings."""
        from .dicom import tls as dicom_tls

        d = self.config.dicom
        dicom_tls.check_listeners(d.port, d.tls_port, d.tls_only)
        return dicom_tls.server_context(dicom_tls.TlsSettings.from_config(self.config)) if d.tls_port else None

    @cached_property
    def node(self) -> DicomNode:
        """The DICOM node with every DIMSE service registered (registry.py: the conformance table)."""
        from .dicom import services
        from .dicom.association_log import AssociationLog
        from .dicom.node import DicomNode, NodeSettings
        from .dicom.policy import AssociationPolicy
        from .dicom.query_audit import QueryAudit
        from .dicom.scu import ObjectSender

        settings = NodeSettings.from_config(self.config)
        node = DicomNode(settings, policy=AssociationPolicy(settings.ae_title,
                                                            allowed_callers_from(self.config, self.peers),
                                                            self.peers.pinned_certificate),
                         events=self.events, tls_context=self.dicom_tls_context)
        for service in services.all_services(ingestor=self.ingestor, index=self.index, peers=self.peers,
                                             worklist_store=self.worklist, archive=self.archive, audit=self.audit,
                                             ae_title=node.ae_title, sender=ObjectSender(self.archive),
                                             commitment=self.commitment):
            node.register(service)
        for event, handler in QueryAudit(self.audit).handlers():  # one "dicom.find" entry per association
            node.watch(event, handler)
        for event, handler in services.watchers():  # C-GET storage contexts accepted as the box can fill them
            node.watch(event, handler)
        for event, handler in AssociationLog().handlers():  # one INFO line per association for the journal
            node.watch(event, handler)
        workers = self.config.dicom.ingest_workers
        if workers > 0 and settings.plain:  # storage associations on more cores (dicom/workers.py)
            from .dicom.workers import IngestWorkers

            peers = self.peers
            node.hand_off_to(IngestWorkers(self.config, workers, settings=settings, ingestor=self.ingestor,
                                           events=self.events, policy=node.policy, slots=node.slots,
                                           permits_store=lambda calling: peers.permits(calling, "can_store")))
        return node

    @cached_property
    def services(self) -> list[Service]:
        """The background services, in start order (``Appliance.stop`` stops them in reverse)."""
        from .backup.schedule import Scheduler

        b = self.config.backup
        services: list[Service] = [
            self.audit,  # aggregates DICOM stores
            Named("backup scheduler", Scheduler(self.backup, b.window, b.retries, b.retry_seconds)),
            Named("storage recycling", self.recycler),
        ]
        if self.config.inbox.enabled:
            from .importer.watcher import Inbox, InboxSettings

            services.append(Inbox(InboxSettings.from_config(self.config), self.ingestor, self.audit,
                                  self.failed_imports.quarantine))
        services.append(self.forwarder)
        services.append(self.commitment)  # reports not delivered yet, retried with back-off
        expire_days = self.config.worklist.expire_days
        services.append(PeriodicTask("worklist expiry", lambda: self.worklist.expire(expire_days), 3600))
        if self.verifier is not None:
            services.append(Named("background verification", self.verifier))
        services.append(PeriodicTask("pruning", self.prune, 3600))
        from .corrections import recycle_bin_of
        from .services.snapshots import IndexSnapshots

        services.append(PeriodicTask("recycle bin", recycle_bin_of(self).purge, 3600))
        if not self.config.index.url:  # local snapshots are of the embedded index (PostgreSQL: its server's)
            services.append(IndexSnapshots(self.index, self.keyring.index_key, self.archive, self.config.data_dir,
                                           self.config.index.snapshot_keep, self.config.index.snapshot_hours))
        return services

    def prune(self) -> None:
        """Hourly and at start (after reconciliation): old orphans and old inbox/processed/ copies."""
        from .archive.orphans import prune_orphans
        from .importer.watcher import prune_processed

        prune_orphans(self.archive, self.config.storage.orphans_keep_days)
        prune_processed(self.config.inbox_dir, self.config.inbox.processed_keep_days)

    def close(self) -> None:
        if "index" in self.__dict__:
            self.index.close()


def build(config: Config, with_web: bool = True) -> Appliance:
    parts = Parts(config, starting=True)
    _ = parts.dicom_tls_context  # DICOM TLS settings are checked before anything is opened
    try:
        app = Appliance(config=config, keys=parts.keys, archive=parts.archive, index=parts.index,
                        events=parts.events, audit=parts.audit, ingestor=parts.ingestor, peers=parts.peers,
                        worklist=parts.worklist, forwarder=parts.forwarder, backup=parts.backup,
                        recycler=parts.recycler, node=parts.node, failed_imports=parts.failed_imports,
                        versions=parts.versions, verifier=parts.verifier, services=parts.services,
                        deferred_index_check=parts.deferred_index_check)
    except BaseException:
        parts.close()  # e.g. a bad [forward] rule: do not leave the index open behind the error
        raise
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
    app.start()  # malloc was tuned by the caller before any thread existed (cli serve)
    # What start-up built lives as long as the process: keep it out of the collector's full passes, each of
    # which otherwise walked it all and stalled a C-GET now and then by 30-40 ms (bench/README.md, session 7)
    gc.collect()
    gc.freeze()
    sdnotify.notify("READY=1")
    log.info("appliance ready")
    interval = sdnotify.watchdog_interval()
    next_trim = time.monotonic() + malloc.TRIM_INTERVAL_S
    try:
        while not stop_event.wait(min(interval or 1.0, 1.0)) and app.failure is None:
            if interval:
                sdnotify.notify("WATCHDOG=1")
            if time.monotonic() >= next_trim:
                malloc.trim()
                next_trim = time.monotonic() + malloc.TRIM_INTERVAL_S
    finally:
        sdnotify.notify("STOPPING=1")
        app.stop()
        log.info("appliance stopped")
    if app.failure is not None:
        raise app.failure  # e.g. TooManyOrphans from the background reconciliation: exit 7
