"""Latency tuning of accepted DICOM connections: TCP options and wake-ups instead of polling.

Two things make a small C-STORE slow in a stock pynetdicom acceptor:

1. TCP. Many senders (dcmtk's storescu, Orthanc, modalities) leave Nagle's algorithm
   on: their trailing small segment waits for our ACK, which Linux delays by up to
   40 ms. Setting TCP_NODELAY (our small responses leave at once) and TCP_QUICKACK
   (we ACK at once) on our end removes the stall. Linux clears TCP_QUICKACK again by
   itself, so it is re-armed after every receive.
2. Polling. pynetdicom's two threads per association poll: the DUL thread sleeps
   1 ms whenever it finds nothing to do, and the association thread sleeps 1 ms
   before each look at the message queue. A C-STORE round trip pays those sleeps
   several times. Here the DUL thread instead blocks in ``select`` on the socket
   *and* on a wake-up socket that is poked whenever a PDU is queued for sending, and
   the association thread waits on its message queue's condition. Both still wake at
   least every POLL_INTERVAL (5 ms) for pynetdicom's timers and state checks (ARTIM
   and idle timeouts, counted in seconds); a release or abort request from the peer
   wakes the association thread at once. Each idle wake-up costs ~30 us of CPU under
   the GIL: at 1 ms that was ~10 % of the CPU of an ingest (bench/README.md).

A thread waiting for the answer to its own request may also read it itself instead of the
DUL thread (``claim_reads``, used by outbound.InlineResponses for C-STORE-RSPs, and by
inline_store.InlineStores for a storage association's next C-STORE-RQ): one thread
reads the socket at a time, decided under a lock; while the socket is claimed the DUL thread
waits on its wake-up socket alone, and a PDU the claiming thread does not want is handed to
the DUL thread decoded (``hand_over``) as its own read would have.

``tune_accepted_socket`` is an EVT_CONN_OPEN handler that applies all of this to a
new association before its threads start. It only touches attributes that exist in
the pynetdicom versions this was measured with (3.0) and skips anything it does not
recognise, so a pynetdicom upgrade falls back to stock (slower, still correct) behaviour.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
from typing import Callable

from pynetdicom.timer import Timer
from pynetdicom.transport import AssociationSocket

from . import standard_uids

log = logging.getLogger(__name__)
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
POLL_INTERVAL = 0.005  # the longest either thread now waits without re-checking its state
# A peer's PDU length is read before anything else about it; these bound what it may claim.
ASSOCIATE_LIMIT = 1 << 20  # an A-ASSOCIATE-RQ: 128 contexts x 45 transfer syntaxes is ~160 KiB
PREALLOCATE = 1 << 20  # a longer PDU's buffer grows as its bytes arrive instead of at once
PROGRESS_BYTES = 1 << 20  # received bytes that count as progress for the idle timer (with whole messages)
CLAIM_SLICE = 0.1  # how often a thread waiting on a claimed socket checks that it is still open
DIRECT_SEND_TIMEOUT = 60.0  # send_direct's wait for a peer that reads nothing, when no network_timeout is set
ABORT_NOT_SPECIFIED, ABORT_INVALID_PARAMETER = 0x00, 0x06  # A-ABORT reasons (source 2), PS3.8 9.3.8


def _quickack(sock: socket.socket | None) -> None:
    if QUICKACK is not None and sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        except OSError:
            pass


class TunedAssociationSocket(AssociationSocket):
    """Re-arms TCP_QUICKACK after each receive; ``ready`` blocks until data or a wake-up."""

    _wake_r: socket.socket | None = None
    _wake_w: socket.socket | None = None
    _send_queue: queue.Queue | None = None
    _waiting = False  # the DUL thread is in (or about to enter) select
    _wake_sent = False  # a wake-up byte is on its way: no need for another
    _body_next = False  # a PDU header was read: the next recv is its body
    _pdu_deadline: float | None = None  # by when that body must be complete
    _pdu_limit: int | None = 0  # 0: not looked up yet (see _limit)
    received = 0  # bytes read from the peer so far (the idle timer's measure of progress)
    send_lock: threading.Lock | None = None  # set by tune_accepted_socket: ``send`` and ``send_direct`` share it
    # Reading on the association thread (``claim_reads``): who may read the next PDU, decided under _claim.
    _claim: threading.Lock | None = None  # set with the wake-up sockets: no claim without them
    _inline = False  # the association thread reads PDUs itself; the DUL thread keeps off the socket
    _dul_reading = False  # the DUL thread found the socket readable: reading a PDU, or handling it
    _inline_reads = 0  # PDUs read by the association thread so far (a select result older than one is stale)
    _parked = False  # the DUL thread's select leaves the socket out (it was claimed when it began)

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` (pynetdicom calls this twice per PDU: its 6-byte header, then its body).

        A peer's PDU is a claim, not a promise: the buffer grows only as bytes arrive, a body longer
        than this state allows (``_limit``) is refused before any of it is read, and header and body
        together must arrive within one deadline (``_deadline``), however the bytes are spaced.
        Either refusal sends an A-ABORT and returns a short read, which pynetdicom treats as a
        connection closed mid-PDU (Evt17): it closes the socket and frees the association slot.
        """
        header = not self._body_next
        if header:
            deadline = self._deadline()
        else:
            deadline, self._body_next = self._pdu_deadline, False
            limit = self._limit()
            if limit is not None and nr_bytes > limit:
                self._refuse(f"announced a {nr_bytes}-byte PDU, more than the {limit} bytes allowed "
                             f"{'before association' if self._associating() else 'by the maximum PDU size'}",
                             ABORT_INVALID_PARAMETER)
                return bytearray()
        buffer = self._read(nr_bytes, deadline)
        if buffer is None:
            what = "PDU header" if header else f"{nr_bytes}-byte PDU"
            self._refuse(f"did not complete a {what} within {self._timeout():g} s", ABORT_NOT_SPECIFIED)
            return bytearray()
        self.received += len(buffer)
        if header and len(buffer) == 6 and 0x01 <= buffer[0] <= 0x07:
            self._body_next, self._pdu_deadline = True, deadline  # the body shares the header's deadline
        return buffer

    def _read(self, nr_bytes: int, deadline: float | None) -> bytearray | None:
        """Up to ``nr_bytes`` (fewer if the peer closes); None when ``deadline`` passes first."""
        sock = self.socket
        buffer = bytearray(min(nr_bytes, PREALLOCATE))
        view = memoryview(buffer)
        nr_read = 0
        timeout_before = sock.gettimeout()
        plain = deadline is None or (not isinstance(sock, ssl.SSLSocket) and timeout_before is None)
        try:
            while nr_read < nr_bytes:  # one recv_into per kernel chunk, not pynetdicom's 4 KiB loop
                if nr_read == len(buffer):  # grow by doubling, never past what was asked for
                    view.release()  # a bytearray with a live memoryview cannot be resized
                    buffer.extend(bytes(min(nr_read, nr_bytes - nr_read)))
                    view = memoryview(buffer)
                if plain:  # fast path: no timeout bookkeeping unless the kernel has nothing for us
                    try:
                        n = sock.recv_into(view[nr_read:]) if deadline is None \
                            else sock.recv_into(view[nr_read:], 0, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                            return None
                        continue
                else:  # TLS (or a socket with its own timeout): the deadline as a socket timeout
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    sock.settimeout(remaining)
                    try:
                        n = sock.recv_into(view[nr_read:])
                    except (socket.timeout, TimeoutError):
                        return None
                _quickack(sock)
                if not n:  # connection closed: return what arrived, like pynetdicom
                    break
                nr_read += n
        finally:
            view.release()
            if not plain:
                sock.settimeout(timeout_before)
        del buffer[nr_read:]
        return buffer

    def _associating(self) -> bool:
        """Waiting for the A-ASSOCIATE-RQ (acceptor) or its answer (requestor)."""
        return self.assoc.dul.state_machine.current_state in ("Sta2", "Sta5")

    def _limit(self) -> int | None:
        """The longest PDU body accepted now: an association request gets ASSOCIATE_LIMIT, later PDUs the
        maximum PDU length we announced plus 6 (the slack for senders that count the PDV header in it);
        None when we announced no maximum (``max_pdu = 0``)."""
        if self._associating():
            return ASSOCIATE_LIMIT
        if self._pdu_limit == 0:  # negotiated once: look it up on the first PDU after association
            assoc = self.assoc
            max_pdu = (assoc.acceptor if assoc.is_acceptor else assoc.requestor).maximum_length
            self._pdu_limit = max_pdu + 6 if max_pdu else None
        return self._pdu_limit

    def _timeout(self) -> float | None:
        """Seconds a whole PDU may take: network_timeout, and acse_timeout for the association request."""
        assoc = self.assoc
        timeout = assoc.network_timeout
        if self._associating() and assoc.acse_timeout is not None:
            timeout = assoc.acse_timeout if timeout is None else min(timeout, assoc.acse_timeout)
        return timeout

    def _deadline(self) -> float | None:
        timeout = self._timeout()
        return None if timeout is None else time.monotonic() + timeout

    def _refuse(self, why: str, reason: int) -> None:
        """Log why, and tell the peer with an A-ABORT (source: service provider) before the short read."""
        sock = self.socket
        try:
            peer = sock.getpeername()[0]
        except OSError:
            peer = "a closed connection"
        log.warning("DICOM connection from %s aborted: it %s", peer, why)
        abort = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, reason))  # A-ABORT PDU, PS3.8 9.3.8
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(1.0)
                sock.sendall(abort)
            else:
                sock.send(abort, socket.MSG_DONTWAIT)  # never wait on a peer that does not read
        except OSError:
            pass

    def send(self, bytestream: bytes) -> None:
        lock = self.send_lock
        if lock is None:
            super().send(bytestream)
        else:
            with lock:  # never interleaved with a ``send_direct`` from the association thread
                super().send(bytestream)
        # Sending flips Linux back to delayed ACKs ("interactive" mode): re-arm so the
        # peer's next request is ACKed by the kernel on arrival, before we even read it.
        _quickack(self.socket)

    def send_direct(self, data: bytes) -> bool:
        """Write whole PDUs from the association thread, bypassing the DUL's queue and state machine
        (pending.py: many C-FIND responses in one write). Only on a plain TCP socket (an SSL object
        must not be written by one thread while another reads it) and only with ``send_lock``, which
        ``send`` takes too, so PDUs never interleave. False if the connection is gone (the DUL is told,
        as pynetdicom's own ``send`` does)."""
        lock, sock = self.send_lock, self.socket
        if lock is None or sock is None or isinstance(sock, ssl.SSLSocket):
            return False
        timeout = getattr(self.assoc, "network_timeout", None) or DIRECT_SEND_TIMEOUT
        with lock:
            if not self._send_all(sock, memoryview(data), timeout):
                self.event_queue.put("Evt17")  # gone, or not reading: the DUL closes the connection
                return False
        _quickack(sock)
        return True

    @staticmethod
    def _send_all(sock: socket.socket, view: memoryview, timeout: float) -> bool:
        """Everything, or False on an error or when the peer takes nothing for ``timeout`` seconds (a
        peer that never reads must not hold the association thread, and this lock, for ever)."""
        sent = 0
        deadline = time.monotonic() + timeout
        try:
            while sent < len(view):
                try:
                    n = sock.send(view[sent:], socket.MSG_DONTWAIT)
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    select.select([], [sock], [], remaining)
                    continue
                sent += n
                deadline = time.monotonic() + timeout  # progress
        except OSError:
            return False
        return True

    @property
    def ready(self) -> bool:
        wake = self._wake_r
        if wake is None or self.socket is None or self._is_connected is False:
            return super().ready
        # The DUL thread asks again only after handling what it read last time: its last PDU is done with.
        self._dul_reading = False
        self._waiting = True
        try:
            if self._send_queue is not None and not self._send_queue.empty():
                return False  # something to send: let the DUL loop get to it now
            if not self.event_queue.empty():
                return False  # the DUL handles one event per pass: a PDU read last pass still waits
            reads = self._inline_reads
            self._parked = self._inline  # claimed: the association thread reads; the DUL thread waits aside
            watched = [wake] if self._parked else [self.socket, wake]
            readable, _, _ = select.select(watched, [], [], POLL_INTERVAL)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport closed, as pynetdicom reports it
            return False
        finally:
            self._waiting = False
        if wake in readable:
            self._wake_sent = False
            try:
                wake.recv(4096)  # drain; the DUL loop now looks at its send queue
            except OSError:
                pass
        if self.socket not in readable:
            return bool(getattr(self.socket, "pending", lambda: 0)())
        with self._claim or contextlib.nullcontext():
            if self._inline or self._inline_reads != reads:
                return False  # claimed meanwhile, or what select saw was read by the association thread
            self._dul_reading = True  # no claim until it asks again (it has handled the PDU by then)
        return True

    def claim_reads(self) -> bool:
        """Let the calling (association) thread read the next PDUs itself (``read_pdu``) and keep the DUL
        thread off the socket until ``release_reads``. False when the DUL thread is reading a PDU, or has
        one it has not handled yet (the order of PDUs must hold), or this socket cannot be claimed."""
        claim = self._claim
        if claim is None or self.socket is None or isinstance(self.socket, ssl.SSLSocket):
            return False
        with claim:
            if self._inline or self._dul_reading or not self.event_queue.empty():
                return False
            self._inline = True
        return True

    def release_reads(self, wake: bool = False) -> None:
        """The DUL thread reads again: at its next look (within POLL_INTERVAL), or at once with ``wake``
        (after a PDU was handed to it, or when nobody will claim again soon)."""
        self._inline = False
        if wake:
            self.wake()

    def rewatch(self) -> None:
        """After the last claim of a while (a C-GET's final response went out): get the DUL thread back
        to the socket now rather than at its next look, so the peer's release is read at once."""
        if self._parked and not self._inline:
            self.wake()

    def wait_readable(self, timeout: float) -> bool | None:
        """For the claiming thread: True when the peer sent something, False after ``timeout`` seconds,
        None when the connection is closed meanwhile (by the DUL thread, e.g. after a local abort)."""
        deadline = time.monotonic() + timeout
        while True:
            sock = self.socket
            if sock is None or sock.fileno() < 0:
                return None
            remaining = deadline - time.monotonic()
            try:  # in slices: a socket closed by another thread does not end a select on it
                if select.select([sock], [], [], max(0.0, min(remaining, CLAIM_SLICE)))[0]:
                    return True
            except (OSError, ValueError):
                return None
            if remaining <= CLAIM_SLICE:
                return False

    def read_pdu(self, before_failure: Callable[[], None] | None = None) -> bytearray | None:
        """The next whole PDU, read by the claiming thread with ``recv``'s limits and deadline. None when
        the connection closed or the PDU was refused or unknown: the DUL is told as its own read would
        (Evt17, Evt19), and handles it once the claim is released. ``before_failure`` runs just before
        that event is queued (inline_store.py hands over the earlier PDUs of a half-read message first)."""
        self._inline_reads += 1
        header = self.recv(6)
        event = None
        if len(header) != 6:
            event = "Evt17"
        elif not 0x01 <= header[0] <= 0x07:
            log.error("Unknown PDU type received '0x%02X'", header[0])
            event = "Evt19"
        else:
            length = int.from_bytes(header[2:6], "big")
            body = self.recv(length) if length else bytearray()
            if len(body) != length:
                event = "Evt17"
        if event is not None:
            if before_failure is not None:
                before_failure()
            self.event_queue.put(event)
            return None
        header += body
        return header

    def hand_over(self, pdu: bytearray) -> None:
        """Give a PDU read by the claiming thread to the DUL thread, decoded as its own read would have."""
        dul = self.assoc.dul
        try:
            decoded, event = dul._decode_pdu(pdu)
        except Exception:  # noqa: BLE001 - as pynetdicom: an undecodable PDU is Evt19
            log.exception("Unable to decode the received PDU data")
            self.event_queue.put("Evt19")
            return
        dul._recv_pdu.put(decoded)  # before its event: the DUL thread takes it when it handles the event
        self.event_queue.put(event)

    def wake(self) -> None:
        """Get the DUL thread out of ``select``; a no-op when it is not waiting there (it will look at
        its send queue before it waits again), since each wake-up costs a syscall and a thread switch."""
        w = self._wake_w
        if w is not None and self._waiting and not self._wake_sent:
            self._wake_sent = True
            try:
                w.send(b"\0")
            except OSError:  # closed, or full (a wake-up is pending anyway)
                self._wake_sent = False

    def close(self) -> None:
        super().close()
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()
        self._wake_r = self._wake_w = None


class _ProgressTimer(Timer):
    """The DUL's idle timer (``network_timeout``), restarted by progress rather than by any PDU.

    pynetdicom restarts it after every PDU it reads, so a peer that sends a one-byte P-DATA PDU
    now and then holds its association (and a slot) for ever. Here that restart counts only
    once PROGRESS_BYTES more have arrived; a whole DIMSE message received (``progress``, called
    from the DIMSE message queue) always counts. An association without either for
    ``network_timeout`` seconds is aborted by pynetdicom's own idle check.
    """

    def __init__(self, timeout: float | None, transport: TunedAssociationSocket):
        super().__init__(timeout)
        self._transport = transport
        self._mark = 0

    def restart(self) -> None:
        if self._transport.received - self._mark >= PROGRESS_BYTES:
            self.progress()

    def progress(self) -> None:
        self._mark = self._transport.received
        self.start()


class _DimseQueue(queue.Queue):
    """A tuned association's DIMSE message queue.

    ``put``: a whole message received is progress for the idle timer (acceptors). ``get``: the
    association's reactor never takes a message while the association is paused. pynetdicom pauses
    it around each ``send_c_*`` (so the response goes to the sender), but the reactor only marks
    itself running again after its checkpoint returned: a response arriving in that gap was taken
    as a request ("Received unexpected C-STORE service message") and the sender timed out. Checked
    under the queue's lock, so the response to a request sent after the pause can never slip through.
    """

    on_put: Callable[[], None] | None = None
    reactor: threading.Thread | None = None  # the association thread
    checkpoint: threading.Event | None = None  # set = not paused

    def put(self, item, block=True, timeout=None):
        super().put(item, block, timeout)
        if self.on_put is not None:
            self.on_put()

    def get(self, block=True, timeout=None):
        if block or self.checkpoint is None or threading.current_thread() is not self.reactor:
            return super().get(block, timeout)
        with self.mutex:
            if not self._qsize() or not self.checkpoint.is_set():
                raise queue.Empty
            item = self._get()
            self.not_full.notify()
            return item


class _WakingQueue(queue.Queue):
    """The DUL's send queue: putting a primitive wakes the DUL thread out of ``select``."""

    def __init__(self, transport: TunedAssociationSocket):
        super().__init__()
        self._transport = transport

    def put(self, item, block=True, timeout=None):
        super().put(item, block, timeout)
        self._transport.wake()


class _NotifyingQueue(queue.Queue):
    """The DUL's queue to the association (A-RELEASE and A-ABORT indications): putting also wakes the
    association thread waiting on its DIMSE message queue, so a release is answered at once."""

    def __init__(self, messages: queue.Queue):
        super().__init__()
        self._messages = messages

    def put(self, item, block=True, timeout=None):
        super().put(item, block, timeout)
        with self._messages.not_empty:  # Queue.get re-checks its queue, so other waiters just look again
            self._messages.not_empty.notify_all()


class _MessageWaitCheckpoint(threading.Event):
    """The association reactor's pause checkpoint that also waits (briefly) for a DIMSE message.

    pynetdicom's acceptor loop is: sleep 1 ms, ``checkpoint.wait()``, take a message if
    one is queued. Waiting here on the message queue's condition, up to one poll
    interval, serves a message the moment it is decoded.
    """

    reads_held = None  # inline_store.InlineStores: ``held`` (this thread claimed the next read) and ``drop``

    def __init__(self, messages: queue.Queue):
        super().__init__()
        self._messages = messages

    def wait(self, timeout=None):
        held = self.reads_held
        if held is not None and held.held:
            if super().wait(0):
                return True  # the reactor reads the next message itself (its get_msg): no wait for the DUL's
            held.drop()  # paused by another thread: the DUL thread reads (that thread's answer) while it waits
        result = super().wait(timeout)
        if result:
            with self._messages.not_empty:
                if not self._messages._qsize():
                    self._messages.not_empty.wait(POLL_INTERVAL)
            result = self.is_set()  # paused meanwhile (C-GET/C-MOVE sub-operations): let the caller re-check
        return result


class _ReactorTime:
    """Stands in for the ``time`` module inside ``pynetdicom.association``.

    The acceptor loop starts every pass with ``time.sleep(0.001)`` (association.py,
    ``_run_reactor``). For a tuned association that wait happens in
    ``_MessageWaitCheckpoint.wait`` instead, which returns as soon as a message is
    queued, so the fixed sleep is skipped there. Every other caller and every other
    association sleeps exactly as before.
    """

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds == 0.001 and getattr(threading.current_thread(), "_pacs_message_wait", False):
            return
        time.sleep(seconds)


def _install_reactor_time() -> bool:
    import pynetdicom.association as association_module

    current = getattr(association_module, "time", None)
    if isinstance(current, _ReactorTime):
        return True
    if current is not time:  # not the module layout this was written for
        return False
    association_module.time = _ReactorTime()
    return True


def _track_progress(assoc, transport: TunedAssociationSocket) -> _DimseQueue | None:
    """Give the association our DIMSE queue and, an acceptor, the progress-based idle timer (see
    _ProgressTimer); None when pynetdicom's layout is not the known one. A requestor's DUL already
    runs (it made the connection), but no DIMSE message can arrive before the association is
    negotiated, so its queue can still be swapped; it keeps pynetdicom's idle timer."""
    dul, dimse = assoc.dul, getattr(assoc, "dimse", None)
    timer, messages = getattr(dul, "_idle_timer", None), getattr(dimse, "msg_queue", None)
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if (assoc.is_acceptor and dul.is_alive()) or type(messages) is not queue.Queue or not messages.empty():
        return None
    dimse.msg_queue = messages = _DimseQueue()
    if isinstance(assoc, threading.Thread) and isinstance(checkpoint, threading.Event):
        messages.reactor, messages.checkpoint = assoc, checkpoint
    if assoc.is_acceptor and type(timer) is Timer:
        dul._idle_timer = _ProgressTimer(timer.timeout, transport)
        messages.on_put = dul._idle_timer.progress
    return messages


def tune(sock: socket.socket) -> None:
    """Set TCP_NODELAY and TCP_QUICKACK on a connected TCP socket (best effort)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
    except OSError as exc:  # already closed
        log.debug("could not tune the accepted socket: %s", exc)


def tune_accepted_socket(event) -> None:
    """EVT_CONN_OPEN handler: tune the new association of ``event.assoc`` (before its threads run)."""
    assoc = event.assoc
    dul = assoc.dul
    transport = getattr(dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if sock is None or type(transport) is not AssociationSocket or sock.family not in (socket.AF_INET,
                                                                                        socket.AF_INET6):
        return
    tune(sock)
    standard_uids.install()  # before the association request is decoded (standard_uids.py)
    transport.__class__ = TunedAssociationSocket
    transport.send_lock = threading.Lock()
    messages = _track_progress(assoc, transport)
    # A requestor's DUL thread already runs: it made the connection and calls this handler itself, so
    # its queues can be swapped here too (nothing else puts to them while it is busy connecting).
    on_dul_thread = threading.current_thread() is dul
    if (dul.is_alive() and not on_dul_thread) or not isinstance(getattr(dul, "to_provider_queue", None),
                                                                queue.Queue) \
            or not dul.to_provider_queue.empty():
        return  # not the pynetdicom layout we know: keep its polling
    transport._wake_r, transport._wake_w = socket.socketpair()
    transport._wake_r.setblocking(False)
    transport._wake_w.setblocking(False)
    transport._claim = threading.Lock()
    dul.to_provider_queue = transport._send_queue = _WakingQueue(transport)
    dul._run_loop_delay = 0  # the wait now happens in ``ready``
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if not assoc.is_acceptor:
        return  # a requestor's replies are awaited on its message queue (no polling); its reactor idles
    if messages is not None and type(checkpoint) is threading.Event and checkpoint.is_set():
        assoc._reactor_checkpoint = _MessageWaitCheckpoint(messages)
        assoc._reactor_checkpoint.set()
        if isinstance(assoc, threading.Thread):
            messages.reactor, messages.checkpoint = assoc, assoc._reactor_checkpoint
        if type(dul.to_user_queue) is queue.Queue and dul.to_user_queue.empty():
            dul.to_user_queue = _NotifyingQueue(messages)
        if isinstance(assoc, threading.Thread) and _install_reactor_time():
            assoc._pacs_message_wait = True  # the association's own thread runs its reactor
