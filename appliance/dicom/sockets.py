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

``tune_accepted_socket`` is an EVT_CONN_OPEN handler that applies all of this to a
new association before its threads start. It only touches attributes that exist in
the pynetdicom versions this was measured with (3.0) and skips anything it does not
recognise, so a pynetdicom upgrade falls back to stock (slower, still correct) behaviour.
"""
from __future__ import annotations

import logging
import queue
import select
import socket
import threading
import time

from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
POLL_INTERVAL = 0.005  # the longest either thread now waits without re-checking its state


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

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        nr_read = 0
        while nr_read < nr_bytes:  # one recv_into per kernel chunk, not pynetdicom's 4 KiB loop
            n = sock.recv_into(view[nr_read:])
            _quickack(sock)
            if not n:  # connection closed: return what arrived, like pynetdicom
                view.release()  # a bytearray with a live memoryview cannot be resized
                del buffer[nr_read:]
                break
            nr_read += n
        return buffer

    def send(self, bytestream: bytes) -> None:
        super().send(bytestream)
        # Sending flips Linux back to delayed ACKs ("interactive" mode): re-arm so the
        # peer's next request is ACKed by the kernel on arrival, before we even read it.
        _quickack(self.socket)

    @property
    def ready(self) -> bool:
        wake = self._wake_r
        if wake is None or self.socket is None or self._is_connected is False:
            return super().ready
        self._waiting = True
        try:
            if self._send_queue is not None and not self._send_queue.empty():
                return False  # something to send: let the DUL loop get to it now
            if not self.event_queue.empty():
                return False  # the DUL handles one event per pass: a PDU read last pass still waits
            readable, _, _ = select.select([self.socket, wake], [], [], POLL_INTERVAL)
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
        return self.socket in readable or bool(getattr(self.socket, "pending", lambda: 0)())

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

    def __init__(self, messages: queue.Queue):
        super().__init__()
        self._messages = messages

    def wait(self, timeout=None):
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
    transport.__class__ = TunedAssociationSocket
    if dul.is_alive() or not isinstance(getattr(dul, "to_provider_queue", None), queue.Queue) \
            or not dul.to_provider_queue.empty():
        return  # not the pynetdicom layout we know: keep its polling
    transport._wake_r, transport._wake_w = socket.socketpair()
    transport._wake_r.setblocking(False)
    transport._wake_w.setblocking(False)
    dul.to_provider_queue = transport._send_queue = _WakingQueue(transport)
    dul._run_loop_delay = 0  # the wait now happens in ``ready``
    messages = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if isinstance(messages, queue.Queue) and type(checkpoint) is threading.Event and checkpoint.is_set():
        assoc._reactor_checkpoint = _MessageWaitCheckpoint(messages)
        assoc._reactor_checkpoint.set()
        if type(dul.to_user_queue) is queue.Queue and dul.to_user_queue.empty():
            dul.to_user_queue = _NotifyingQueue(messages)
        if isinstance(assoc, threading.Thread) and _install_reactor_time():
            assoc._pacs_message_wait = True  # the association's own thread runs its reactor
