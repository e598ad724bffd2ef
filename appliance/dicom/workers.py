"""Ingest worker processes: storage associations served on every core (``[dicom] ingest_workers``).

CPython runs one thread of Python at a time per process, so a node serving four storing
associations used ~0.8 of a core (bench/README.md, "Both cores"). With ``ingest_workers = N``
the node (the parent) keeps its listeners, the association policy and slot budget, the one
index writer and everything else; what it hands to a worker process is an accepted plain TCP
connection whose A-ASSOCIATE-RQ proposes only storage SOP classes and Verification:

1. The parent's per-connection thread peeks at the A-ASSOCIATE-RQ (MSG_PEEK: the bytes stay
   for whoever serves the connection), within ``acse_timeout`` and ASSOCIATE_LIMIT bytes, and
   decodes it with pynetdicom's PDU class. Anything else -- another service, a caller the policy
   refuses, no free slot, an incomplete or odd request, no worker ready -- is served in-process
   exactly as before (the rejection too), so a worker only ever sees callers it will accept.
   So is one the workers could serve while no other such association is being served here or in
   a worker: a lone sender keeps the in-process chain (no IPC per instance, no worker memory
   touched); only the second and later concurrent ones go to the workers' cores.
2. The parent takes an association slot, decides the store permission (peer registry, which is
   in the index) and passes the socket with ``socket.send_fds`` to the least busy worker, with one
   end of a new SOCK_SEQPACKET pair: that connection's records channel. A parent thread serves
   the other end (``_serve_records``) until the worker closes it, when the association ends; then
   it frees the slot.
3. The worker runs a pynetdicom acceptor with the node's storage + echo services, socket tuning
   and direct C-STORE responses. For each C-STORE the association's thread seals the object
   itself (``Ingestor.seal``: parse, archive write, fsync), sends the ``Sealed`` attributes as a
   flat tuple (``pack_sealed``) on its connection's channel and waits there for the reply of the
   parent's thread, which runs ``Ingestor.record`` (the one writer: group commit across all
   associations) like an association thread in the node would; the worker answers the C-STORE
   only then. Invariant 1 holds unchanged: fsync in the worker, commit in the parent, then the
   response.
4. Events and log lines of the worker's associations go to the parent, which emits and logs
   them (association accepted, the association log line, ``instance_stored`` from ``record``).

A worker that dies takes its connections with it (the kernel resets them: no sender sees a
success that was not committed); the parent frees its slots and starts another. An object it
sealed but the parent never recorded is an unindexed file that start-up reconciliation puts
aside, as after any crash. A parent that dies takes its workers with it (PR_SET_PDEATHSIG,
and the end of their channel). Workers are started with exec (a fresh interpreter, never a
fork of the threaded parent) and given only their end of one Unix SOCK_SEQPACKET pair.
"""
from __future__ import annotations

import ctypes
import io
import itertools
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable

# Optional packages a worker never uses, kept out of its memory (bench/README.md, "Session 6: both cores"):
# peewee loads psycopg when it can (a worker never opens the index), pydicom loads numpy (values as numpy
# arrays, pixel data, both off the ingest path), Pillow (pixel decoders) and requests (its test-data
# download). pydicom and peewee are made to work without them; an import of one raises ImportError here.
WORKER_NEVER_IMPORTS = ("psycopg", "numpy", "PIL", "requests")
# The index: a worker never opens it, and parses and seals with the plain records of appliance/records, so it
# holds none of this (peewee + SQLCipher were ~14 MB RSS a worker; bench/README.md, "Session 7: ingest
# workers"). Its "ready" message says which of these it imported all the same: the parent logs them, tests check.
INDEX_MODULES = ("appliance.index", "peewee", "playhouse", "sqlcipher3", "sqlite3")
if __name__ == "__main__":
    for _name in WORKER_NEVER_IMPORTS:
        sys.modules.setdefault(_name, None)  # type: ignore[assignment]

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.sop_class import Verification
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from ..archive import StoredObject
from ..errors import ApplianceError
from ..ingest import Origin, Sealed
from ..records.instances import InstanceAttributes
from .status import PROCESSING_FAILURE
from .store import STORAGE_SOP_CLASSES

log = logging.getLogger(__name__)
HANDED_OFF = frozenset(STORAGE_SOP_CLASSES) | {str(Verification)}  # what a worker serves
MESSAGE_LIMIT = 1 << 20  # one channel message (SOCK_SEQPACKET keeps boundaries); a Sealed is a few KiB
LOG_TEXT_LIMIT = 16 << 10
RESTART_PAUSE = 1.0  # seconds between restarts of one worker slot (no busy crash loop)
STOP_WAIT = 5.0
PR_SET_PDEATHSIG = 1


def _send(chan: socket.socket, lock: threading.Lock, message: tuple, fds: list[int] | None = None) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    with lock:
        if fds:
            socket.send_fds(chan, [data], fds)
        else:
            chan.sendall(data)


def _receive(chan: socket.socket) -> tuple[Any, list[int]]:
    """One message and the descriptors sent with it; (None, []) when the other end is gone."""
    try:
        data, fds, _flags, _addr = socket.recv_fds(chan, MESSAGE_LIMIT, 4)
    except OSError:
        return None, []
    if not data:
        return None, fds
    return pickle.loads(data), fds


_ATTRIBUTES = attrgetter(*InstanceAttributes.__dataclass_fields__)  # its values, in field order


def pack_sealed(sealed: Sealed, origin: Origin) -> tuple:
    """A worker's record request as a flat tuple of plain values: about half the bytes of the pickled
    dataclasses, and no class looked up by name per instance on either side."""
    s = sealed.stored
    return (_ATTRIBUTES(sealed.attributes), s.object_id, s.size, s.sha256, origin.kind, origin.detail)


def unpack_sealed(message: tuple) -> tuple[Sealed, Origin]:
    values, object_id, size, sha256, kind, detail = message
    return Sealed(InstanceAttributes(*values), StoredObject(object_id, size, sha256)), Origin(kind, detail)


def peek_associate_rq(sock: socket.socket, timeout: float | None, limit: int) -> bytes | None:
    """The whole A-ASSOCIATE-RQ PDU at the head of ``sock``, left unread (MSG_PEEK); None when the
    first PDU is something else, longer than ``limit``, or not complete within ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    want, have = 6, b""
    while True:
        try:
            have = sock.recv(want, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        except OSError:
            return None
        if len(have) >= 6 and want == 6:
            if have[0] != 0x01:
                return None
            length = int.from_bytes(have[2:6], "big")
            if length > limit:
                return None
            want = 6 + length
            continue
        if len(have) >= want:
            return have[:want]
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return None
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            return None
        try:  # readable with nothing new: the peer closed (or shut its side) mid-request
            if len(sock.recv(want, socket.MSG_PEEK | socket.MSG_DONTWAIT)) == len(have):
                return None
        except BlockingIOError:
            pass
        except OSError:
            return None


# -- the parent's side --------------------------------------------------------------------------------


class _Worker:
    def __init__(self, number: int, proc: subprocess.Popen, chan: socket.socket):
        self.number = number
        self.proc = proc
        self.chan = chan
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.index_modules: list[str] = []  # which of INDEX_MODULES it imported (its "ready" message)
        self.connections: dict[int, dict | None] = {}  # handed-off connections still open (their slots) ->
        # the established association's {"calling_ae", "address"} (None before)
        self.gone = False

    def send(self, message: tuple, fds: list[int] | None = None) -> None:
        _send(self.chan, self.lock, message, fds)


class IngestWorkers:
    """The parent's side: starts ``count`` workers, offers them connections, records what they seal."""

    def __init__(self, config, count: int, *, settings, ingestor, events, policy, slots,
                 permits_store: Callable[[str], bool]):
        self.config = config
        self.count = count
        self.settings = settings  # NodeSettings
        self.ingestor = ingestor
        self.events = events
        self.policy = policy
        self.slots = slots
        self.permits_store = permits_store
        self._workers: list[_Worker | None] = [None] * count
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = False
        self._ids = itertools.count(1)
        self._recorders: set[threading.Thread] = set()  # one per handed-off connection (``_serve_records``)
        self._supervisor: threading.Thread | None = None
        self.handed_off = 0  # connections handed to a worker so far
        self._here: dict[socket.socket, Any] = {}  # socket -> its Association (None until made) for each
        # connection a worker could serve that is served in-process because it was alone (``offer``)

    # -- life cycle
    def start(self, timeout: float = 60.0) -> None:
        """Start the workers and wait until each is ready (its acceptor built), so the node listens
        with them; a worker that cannot start raises here, before the node takes any connection."""
        self._supervisor = threading.Thread(target=self._supervise, name="ingest-workers", daemon=True)
        self._supervisor.start()  # it starts the workers: PR_SET_PDEATHSIG follows the thread that forked
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._stopping and not all(w is not None and w.ready.is_set() for w in self._workers):
                if any(w is not None and w.gone for w in self._workers):
                    break
                if not self._changed.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() > deadline:
                    break
        ready = self.ready_count()
        if ready < self.count:
            self.stop()
            raise ApplianceError(f"only {ready} of {self.count} ingest worker(s) started ([dicom] ingest_workers): "
                                 "see the log above; set ingest_workers = 0 to serve every association in-process")
        log.info("%d ingest worker process(es) serve storage associations ([dicom] ingest_workers)", ready)

    def ready_count(self) -> int:
        return sum(1 for w in self._workers if w is not None and w.ready.is_set() and not w.gone)

    def active_associations(self) -> list[dict]:
        """{"calling_ae", "address"} of each established association the workers serve."""
        with self._lock:
            return [dict(a) for w in self._workers if w is not None for a in w.connections.values() if a]

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w is not None and not w.gone]

    def index_modules(self) -> dict[int, list[str]]:
        """pid -> which of INDEX_MODULES each ready worker imported (none, unless an import crept in)."""
        return {w.proc.pid: list(w.index_modules) for w in self._workers
                if w is not None and w.ready.is_set() and not w.gone}

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            workers = [w for w in self._workers if w is not None]
            self._changed.notify_all()
        for w in workers:
            try:
                w.chan.shutdown(socket.SHUT_RDWR)  # the worker reads the end of its channel and exits
            except OSError:
                pass
        for w in workers:
            try:
                w.proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.chan.close()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(STOP_WAIT)
        with self._lock:
            recorders = list(self._recorders)
        for thread in recorders:  # each ends at the end of its channel (its worker ended) after its commit
            thread.join(STOP_WAIT)

    def _supervise(self) -> None:
        """Start every worker, and start another whenever one ends, until ``stop``."""
        last_start = [0.0] * self.count
        with self._changed:
            while not self._stopping:
                for i, w in enumerate(self._workers):
                    if (w is None or w.gone) and time.monotonic() - last_start[i] >= RESTART_PAUSE:
                        last_start[i] = time.monotonic()
                        try:
                            self._workers[i] = self._spawn(i)
                        except Exception:  # noqa: BLE001 - reported; the slot is tried again
                            log.exception("could not start ingest worker %d", i)
                self._changed.wait(RESTART_PAUSE)

    def _spawn(self, number: int) -> _Worker:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = str(Path(__file__).resolve().parents[2])  # the tree this appliance runs from
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "appliance.dicom.workers", str(child_end.fileno()),
                                     str(os.getpid())], pass_fds=[child_end.fileno()], env=env, close_fds=True,
                                    stdin=subprocess.DEVNULL)
        finally:
            child_end.close()
        worker = _Worker(number, proc, parent_end)
        worker.send(("start", self.config, self.settings, number))
        threading.Thread(target=self._read, args=(worker,), name=f"ingest-worker-{number}", daemon=True).start()
        log.info("ingest worker %d started (pid %d)", number, proc.pid)
        return worker

    # -- hand-off (the listener's per-connection thread)
    def offer(self, sock: socket.socket, address: tuple) -> bool:
        """Hand ``sock`` to a worker if it asks for storage/verification only and will be accepted;
        True when a worker owns it now (our copy is closed), False to serve it here."""
        data = peek_associate_rq(sock, self.settings.acse_timeout, _associate_limit())
        if data is None:
            return False
        rq = A_ASSOCIATE_RQ()
        try:
            rq.decode(data)
            syntaxes = {str(item.abstract_syntax) for item in rq.presentation_context}
            calling, called = str(rq.calling_ae_title).strip(), str(rq.called_ae_title).strip()
            roles = rq.user_information is not None and bool(rq.user_information.role_selection)
        except Exception:  # noqa: BLE001 - malformed: the in-process path answers it as before
            return False
        if not syntaxes or not syntaxes <= HANDED_OFF:
            return False
        if roles:  # SCP/SCU role selection (a C-GET requestor's storage contexts): the node negotiates those
            return False
        host = address[0]
        if self.policy.check(called, calling, host) is not None:
            return False  # refused in-process: the same log line, event and A-ASSOCIATE-RJ as before
        with self._lock:
            if not self._busy_locked():
                self._here[sock] = None  # served here: the next one while it lasts goes to a worker
                return False
            ready = [w for w in self._workers if w is not None and w.ready.is_set() and not w.gone]
            if not ready or self._stopping:
                return False
            worker = min(ready, key=lambda w: len(w.connections))
            if not self.slots.take_elsewhere():
                return False  # all slots held: rejected in-process (busy), as before
            conn_id = next(self._ids)
            worker.connections[conn_id] = None
            self.handed_off += 1  # counted before the worker can serve it (tests read it after the sender ends)
        records = theirs = None
        try:
            records, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # this connection's records
            worker.send(("connection", conn_id, tuple(address[:2]), calling, self.permits_store(calling)),
                        [sock.fileno(), theirs.fileno()])
        except Exception:  # noqa: BLE001 - the worker just died (or no descriptors left): serve it here
            if records is not None:
                records.close()
            self._closed(worker, conn_id)
            with self._lock:
                self.handed_off -= 1
            return False
        finally:
            if theirs is not None:
                theirs.close()
        thread = threading.Thread(target=self._serve_records, args=(worker, conn_id, records),
                                  name=f"ingest-records-{conn_id}", daemon=True)
        with self._lock:
            self._recorders.add(thread)
        thread.start()
        sock.close()  # the worker holds its own descriptor; never shutdown(): that would end the connection
        return True

    def _busy_locked(self) -> bool:
        """Is an association the workers could serve being served, here (kept by ``offer``) or in a worker?"""
        for key, assoc in list(self._here.items()):
            if assoc is not None and not assoc.is_alive():
                del self._here[key]
        return bool(self._here) or any(w is not None and w.connections for w in self._workers)

    def served_here(self) -> int:
        """How many connections ``offer`` kept in-process (alone when they came) are still being served."""
        with self._lock:
            self._busy_locked()
            return len(self._here)

    def kept(self, sock: socket.socket, assoc) -> None:
        """The listener made ``assoc`` (None: failed) for a connection ``offer`` kept here."""
        with self._lock:
            if sock in self._here:
                if assoc is None:
                    del self._here[sock]
                else:
                    self._here[sock] = assoc

    # -- messages from a worker
    def _read(self, worker: _Worker) -> None:
        while True:
            message, fds = _receive(worker.chan)
            for fd in fds:
                os.close(fd)
            if message is None:
                break
            kind = message[0]
            try:
                if kind == "established":
                    with self._lock:
                        if message[1] in worker.connections:
                            worker.connections[message[1]] = message[2]
                    self.events.emit("association_accepted", **message[2])
                elif kind == "log":
                    logging.getLogger(message[1]).log(message[2], "%s", message[3])
                elif kind == "ready":
                    worker.index_modules = list(message[1])
                    if worker.index_modules:
                        log.warning("ingest worker %d imported %s, which it never uses (memory in every worker): "
                                    "an import on the worker's path reaches appliance/index", worker.number,
                                    ", ".join(worker.index_modules))
                    worker.ready.set()
                    with self._changed:
                        self._changed.notify_all()
            except Exception:  # noqa: BLE001 - one bad message must not stop the channel
                log.exception("ingest worker %d: message %r failed", worker.number, kind)
        self._gone(worker)

    def _serve_records(self, worker: _Worker, conn_id: int, records: socket.socket) -> None:
        """One handed-off connection's thread: record what its association seals, reply, until the worker
        closes the channel (the association ended, or the worker did); then free the connection's slot.
        As an association thread in the node would, it waits for the writer itself: no other hand-over."""
        try:
            while True:
                try:
                    data = records.recv(MESSAGE_LIMIT)
                except OSError:
                    break
                if not data:
                    break
                reply = self._record(worker, *unpack_sealed(pickle.loads(data)))
                try:
                    records.send(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
                except OSError:
                    break  # the worker died: its sender saw the connection drop, never a success
        finally:
            records.close()
            self._closed(worker, conn_id)
            with self._lock:
                self._recorders.discard(threading.current_thread())

    def _record(self, worker: _Worker, sealed, origin) -> tuple:
        """``Ingestor.record`` for a worker: its reply, ("stored",) or ("refused", status, text)."""
        try:
            self.ingestor.record(sealed, origin)
            return ("stored",)
        except ApplianceError as exc:
            return ("refused", exc.dimse_status, str(exc))
        except Exception:  # noqa: BLE001 - never claim success; the worker answers a failure
            log.exception("recording an instance sealed by ingest worker %d failed", worker.number)
            return ("refused", PROCESSING_FAILURE, "internal error while storing; see the appliance log")

    def _closed(self, worker: _Worker, conn_id: int) -> None:
        with self._lock:
            if conn_id not in worker.connections:
                return
            del worker.connections[conn_id]
        self.slots.release_elsewhere()

    def _gone(self, worker: _Worker) -> None:
        code = worker.proc.wait()
        with self._changed:
            worker.gone = True
            lost = len(worker.connections)
            worker.connections.clear()
            stopping = self._stopping
            self._changed.notify_all()
        if lost:
            self.slots.release_elsewhere(lost)
        if not stopping:
            log.error("ingest worker %d (pid %d) ended with %s; %d association(s) it served were cut off (their "
                      "senders saw no success for anything not stored); starting another", worker.number,
                      worker.proc.pid, code, lost)
        worker.chan.close()


class _NotingHandler(RequestHandler):
    """pynetdicom's handler, noting the Association it makes for the thread serving the connection."""

    def _create_association(self):
        assoc = super()._create_association()
        self.server.made.assoc = assoc
        return assoc


class HandOffServer(ThreadedAssociationServer):
    """The node's plain listener when it has ingest workers: each connection's thread first ``offer``s
    it to them (which peeks at its A-ASSOCIATE-RQ), and serves it here as before when they decline."""

    workers: IngestWorkers | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.RequestHandlerClass = _NotingHandler
        self.made = threading.local()  # the Association made on this connection's thread

    def process_request_thread(self, request, client_address) -> None:
        workers = self.workers
        try:
            if workers is not None and workers.offer(request, client_address):
                return
        except Exception:  # noqa: BLE001 - serve it here rather than drop it
            log.exception("handing a connection from %s to an ingest worker failed", client_address[0])
        try:
            super().process_request_thread(request, client_address)
        finally:
            if workers is not None:
                workers.kept(request, getattr(self.made, "assoc", None))


def _associate_limit() -> int:
    from .sockets import ASSOCIATE_LIMIT

    return ASSOCIATE_LIMIT


# -- the worker's side -------------------------------------------------------------------------------


class RecordRefused(ApplianceError):
    """The parent did not record a sealed object; carries the status its ``record`` raised."""

    def __init__(self, dimse_status: int, message: str):
        super().__init__(message)
        self.dimse_status = dimse_status


class _Parent:
    """The worker's channel to the parent, for one-way messages (its records go on each connection's own)."""

    def __init__(self, chan: socket.socket):
        self.chan = chan
        self.lock = threading.Lock()

    def tell(self, *message) -> None:
        _send(self.chan, self.lock, message)


class _Records:
    """A handed-off connection's channel to the parent thread that records what its association seals."""

    def __init__(self, chan: socket.socket):
        self.chan = chan
        self.lock = threading.Lock()  # one request at a time (pynetdicom serves one C-STORE at a time anyway)

    def ask(self, sealed: Sealed, origin: Origin) -> tuple:
        with self.lock:
            self.chan.send(pickle.dumps(pack_sealed(sealed, origin), protocol=pickle.HIGHEST_PROTOCOL))
            data = self.chan.recv(MESSAGE_LIMIT)
        if not data:
            raise OSError("the appliance ended this connection's channel before it recorded the object")
        return pickle.loads(data)

    def close(self) -> None:
        """End the channel: the parent frees the connection's slot. A request waiting for its reply gets
        the end of the channel (a failure), never a success."""
        try:
            self.chan.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self.lock:
            self.chan.close()


class RemoteIngestor:
    """What store.py's C-STORE handler calls in a worker: seal here, record in the parent."""

    def __init__(self, sealer):
        self.sealer = sealer  # an Ingestor with the archive and no index: only its ``seal`` is used

    def store_bytes(self, data: bytes, origin) -> None:
        """Return once the parent committed the object's rows; raise the parent's refusal otherwise."""
        # pynetdicom runs the C-STORE handler on the association's own thread (an Association is a Thread),
        # which ``serve``'s on_open gave its connection's channel.
        records = getattr(threading.current_thread(), "_pacs_records", None)
        if records is None:
            raise RecordRefused(PROCESSING_FAILURE, "internal error: this association has no channel to the "
                                "appliance's index; nothing was stored")
        sealed = self.sealer.seal(io.BytesIO(data), len(data))  # no index here: never a DUPLICATE result
        reply = records.ask(sealed, origin)
        if reply[0] != "stored":
            raise RecordRefused(reply[1], reply[2])


class _HandedOffPermissions:
    """store.py's ``peers`` in a worker: the parent decided the store permission at hand-off. A calling AE
    it was never told about (which the parent's hand-off makes impossible) is refused, never trusted."""

    def __init__(self) -> None:
        self.can_store: dict[str, bool] = {}

    def permits(self, calling: str, permission: str) -> bool:
        calling = calling.strip()
        if permission != "can_store":
            return False
        allowed = self.can_store.get(calling)
        if allowed is None:
            log.error("ingest worker: no store permission was handed over for calling AE %r; its C-STORE is "
                      "refused (a hand-off without its permission is a bug in workers.py)", calling)
            return False
        return allowed


class _ForwardToParent(logging.Handler):
    def __init__(self, parent: _Parent):
        super().__init__()
        self.parent = parent

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.parent.tell("log", record.name, record.levelno, text[:LOG_TEXT_LIMIT])
        except Exception:  # noqa: BLE001 - logging must never break an association
            pass


def _die_with_parent(parent_pid: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the end of the channel still ends the worker
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(0)


def _trim_memory() -> None:
    from .. import malloc

    while True:
        time.sleep(malloc.TRIM_INTERVAL_S)
        malloc.trim()


def serve(chan: socket.socket) -> None:
    """The worker's main loop: build the acceptor from the parent's "start", then take connections."""
    from pynetdicom import AE, evt
    from pynetdicom import _config as pynetdicom_config

    from .. import logsetup, malloc
    from ..archive import Archive, KeyStore
    from ..ingest import Ingestor
    from . import echo, store
    from .association_log import AssociationLog
    from .node import CONNECTION_TUNING, _ContextList, free_slot_of_silent_connection
    from .registry import ServiceRegistry

    message, _ = _receive(chan)
    if message is None or message[0] != "start":
        os._exit(0)
    malloc.tune()  # as serve() does for the node: one arena, large blocks mapped, free pages handed back
    threading.Thread(target=_trim_memory, name="malloc trim", daemon=True).start()
    _, config, settings, number = message
    parent = _Parent(chan)
    logsetup.configure(config.log.level)
    logging.getLogger().handlers[:] = [_ForwardToParent(parent)]
    pynetdicom_config.LOG_HANDLER_LEVEL = "standard" if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO) \
        else "none"

    s = config.storage
    archive = Archive(config.archive_dir, KeyStore(config.keys_dir).load(), chunk_size=s.chunk_kib * 1024)
    sealer = Ingestor(archive, None, None, reserve_bytes=s.reserve_mb * (1 << 20), on_conflict=s.on_conflict,
                      on_patient_change=s.on_patient_change)
    permissions = _HandedOffPermissions()
    registry = ServiceRegistry()
    ae = AE(ae_title=settings.ae_title)
    for service in (echo.service(), store.service(RemoteIngestor(sealer), permissions)):
        registry.register(service)
        for uid, transfer_syntaxes, scu_role, scp_role in service.contexts():
            ae.add_supported_context(uid, transfer_syntaxes, scu_role=scu_role, scp_role=scp_role)
    ae.maximum_associations = 4 * settings.max_associations + 8  # the parent's slots decide
    settings.apply_to(ae)

    handed: dict[int, tuple[int, _Records]] = {}  # id(socket) -> (connection id, its records channel), until
    handed_lock = threading.Lock()  # EVT_CONN_OPEN gives them to the Association (the thread serving it)

    def on_open(event) -> None:
        sock = getattr(event.assoc.dul.socket, "socket", None)
        with handed_lock:
            event.assoc._pacs_connection, event.assoc._pacs_records = handed.pop(id(sock), (None, None))

    def on_established(event) -> None:
        assoc = event.assoc
        parent.tell("established", getattr(assoc, "_pacs_connection", None),
                    {"calling_ae": assoc.requestor.ae_title.strip(), "address": assoc.requestor.address})

    def on_close(event) -> None:
        records = getattr(event.assoc, "_pacs_records", None)
        if records is not None:
            event.assoc._pacs_records = None
            records.close()  # the parent sees the end of the channel and frees the connection's slot

    handlers = [*((event, handler, []) for event, handler in CONNECTION_TUNING),
                (evt.EVT_CONN_OPEN, on_open, []),
                (evt.EVT_CONN_CLOSE, free_slot_of_silent_connection, []),
                (evt.EVT_CONN_CLOSE, on_close, []),
                (evt.EVT_ESTABLISHED, on_established, [])]
    handlers += [(event, handler, []) for event, handler in AssociationLog().handlers()]
    handlers += registry.evt_handlers()
    server = ae.make_server(("127.0.0.1", 0), contexts=_ContextList(ae.supported_contexts), evt_handlers=handlers,
                            server_class=ThreadedAssociationServer)
    server.socket.close()  # never listens: its connections come from the parent
    server.server_address = (settings.host, settings.port)
    parent.tell("ready", [name for name in INDEX_MODULES if sys.modules.get(name) is not None])

    while True:
        message, fds = _receive(chan)
        if message is None:
            os._exit(0)  # the parent stopped us, or died
        kind = message[0]
        if kind == "connection" and len(fds) == 2:
            _, connection, address, calling, can_store = message
            sock = socket.socket(fileno=fds[0])
            sock.setblocking(True)
            records = _Records(socket.socket(fileno=fds[1]))
            permissions.can_store[calling] = can_store
            with handed_lock:
                handed[id(sock)] = (connection, records)
            try:
                server.process_request(sock, address)  # a thread per association, as pynetdicom's listener
            except Exception:  # noqa: BLE001 - the connection is lost; free its slot
                with handed_lock:
                    handed.pop(id(sock), None)
                sock.close()
                records.close()
        else:
            for fd in fds:
                os.close(fd)


def main(argv: list[str]) -> None:
    fd, parent_pid = int(argv[0]), int(argv[1])
    _die_with_parent(parent_pid)
    # ^C in a terminal and systemd's SIGTERM to the whole unit are for the parent, which stops us in
    # order (the end of the channel) after its listeners; a parent that dies still takes us along.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    chan = socket.socket(fileno=fd)
    try:
        serve(chan)
    except BaseException:  # noqa: BLE001 - say why, then end: the parent starts another
        import traceback

        traceback.print_exc()
        os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
