"""DICOM over TLS (PS3.15 Annex B): the settings, the SSL contexts and the TLS listener.

The TLS listener (conventionally port 2762) is a second pynetdicom acceptor of the
same AE beside the plain one: same handlers, same association policy, one
``max_associations`` budget. Its certificate defaults to the box's own
(``<data dir>/tls/``, made at first boot for HTTPS; ``pacs-appliance tls renew|install``).

Client certificates are checked against ``[dicom] tls_ca`` when one is set:
optional by default (a modality with a certificate must present a valid one),
mandatory with ``tls_require_client_cert``. The same CA file is what the box
trusts when it calls a peer over TLS (``client_context``).

pynetdicom wraps each accepted socket with the ``ssl_context`` it is given, but
does the handshake in the one thread that accepts every connection: a caller that
connects and sends nothing would stall the TLS port for everyone, and a failed
handshake is dropped without a word. ``TlsAssociationServer`` keeps pynetdicom's
wrapping and moves the handshake into the connection's own thread, bounded by the
ACSE timeout, and logs why a handshake failed.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from .. import tls as box_tls
from ..errors import ConfigError

log = logging.getLogger(__name__)

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class _NoSslTraceback(logging.Filter):
    """pynetdicom logs a full traceback for every TLS connection it could not open (each forwarding
    retry to a misconfigured peer would add one to the journal); the message line already says why,
    and ``diagnose`` explains it. Keep the line, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ssl.SSLError):
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("pynetdicom.transport").addFilter(_NoSslTraceback())


@dataclass(frozen=True)
class TlsSettings:
    port: int  # 0 = no TLS listener
    cert: Path
    key: Path
    ca: Path | None  # trusted for client certificates and for peers we call
    require_client_cert: bool = False
    min_version: str = "1.2"
    crl: Path | None = None  # revocation lists for client certificates

    @classmethod
    def from_config(cls, config) -> "TlsSettings":
        """Read ``[dicom] tls_*``; relative paths are inside the data directory."""
        d = config.dicom
        default = box_tls.files(config.data_dir)

        def path(value: str, fallback: Path | None) -> Path | None:
            if not value:
                return fallback
            p = Path(value).expanduser()
            return p if p.is_absolute() else config.data_dir / p

        return cls(port=d.tls_port, cert=path(d.tls_cert, default.cert), key=path(d.tls_key, default.key),
                   ca=path(d.tls_ca, None), require_client_cert=d.tls_require_client_cert,
                   min_version=str(d.tls_min_version), crl=path(d.tls_crl, None))


def check_listeners(port: int, tls_port: int, tls_only: bool) -> None:
    """Refuse settings that would open no DICOM port, or two on one port."""
    if tls_only and not tls_port:
        raise ConfigError("[dicom] tls_only is on but tls_port is 0: no DICOM port would be open; "
                          "set tls_port (2762 is the DICOM TLS port) or turn tls_only off")
    if tls_port and not tls_only and tls_port == port:
        raise ConfigError(f"[dicom] tls_port and port are both {port}: give the TLS listener its own port "
                          "(2762 is the DICOM TLS port)")


def _min_version(settings: TlsSettings) -> ssl.TLSVersion:
    try:
        return VERSIONS[settings.min_version]
    except KeyError:
        raise ConfigError(f"[dicom] tls_min_version must be one of {', '.join(VERSIONS)}, "
                          f"not {settings.min_version!r}") from None


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=str(ca))
    except FileNotFoundError:
        raise ConfigError(f"[dicom] tls_ca {ca} does not exist") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"[dicom] tls_ca {ca} holds no usable PEM certificate: {exc}") from None


def _load_crl(context: ssl.SSLContext, crl: Path) -> None:
    """Check each client certificate against its issuer's CRL (OpenSSL reads CRLs from a PEM file
    like CA certificates); a client whose CA has no CRL in the file is refused, not waved through."""
    try:
        text = crl.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise ConfigError(f"[dicom] tls_crl {crl} does not exist") from None
    if "-----BEGIN X509 CRL-----" not in text:
        raise ConfigError(f"[dicom] tls_crl {crl} holds no PEM CRL (-----BEGIN X509 CRL-----); convert a DER "
                          "one with `openssl crl -inform DER -in FILE -out FILE.pem`")
    try:
        context.load_verify_locations(cafile=str(crl))
    except ssl.SSLError as exc:
        raise ConfigError(f"[dicom] tls_crl {crl} could not be read: {exc}") from None
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The TLS listener's context: our certificate, TLS 1.2+ and the client-certificate policy."""
    for what, path in (("tls_cert", settings.cert), ("tls_key", settings.key)):
        if not path.is_file():
            raise ConfigError(f"[dicom] {what} {path} does not exist: make the box's certificate with "
                              "`pacs-appliance tls renew` (self-signed) or `pacs-appliance tls install`, or point "
                              f"[dicom] {what} at your own PEM file")
    box_tls.check_pair(settings.cert.read_bytes(), settings.key.read_bytes())  # a clear message when they differ
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = _min_version(settings)
    context.load_cert_chain(str(settings.cert), str(settings.key))
    if settings.ca is not None:
        _load_ca(context, settings.ca)
        context.verify_mode = ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
        if settings.crl is not None:
            _load_crl(context, settings.crl)
    elif settings.crl is not None:
        raise ConfigError("[dicom] tls_crl is set but tls_ca is empty: revocation lists belong to the CAs in tls_ca")
    elif settings.require_client_cert:
        raise ConfigError("[dicom] tls_require_client_cert is on but tls_ca is empty: set tls_ca to the PEM file "
                          "of the CA (or the certificates themselves) that the modalities' certificates chain to")
    else:
        context.verify_mode = ssl.CERT_NONE  # no CA to check them with: do not ask for client certificates
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """For associations we open to a peer flagged for TLS.

    The peer's certificate must chain to ``tls_ca`` (the system's CAs when none is set). Host names
    are not checked, like dcmtk: DICOM peers are usually addressed by IP and their identity is the
    certificate the clinic put in ``tls_ca``. Our own certificate goes along for peers that ask for one.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = _min_version(settings)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if settings.ca is not None:
        _load_ca(context, settings.ca)
    if settings.cert.is_file() and settings.key.is_file():
        context.load_cert_chain(str(settings.cert), str(settings.key))
    return context


def diagnose(tls_args: tuple[ssl.SSLContext, str], host: str, port: int, timeout: float = 10.0) -> str:
    """Why a TLS association we opened failed, found by a bare handshake with the same context.

    pynetdicom only reports that the association was aborted; this names the cause for the log,
    the admin's echo test and the forwarding queue."""
    context, server_hostname = tls_args
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return f"cannot connect: {exc}"
    try:
        with raw, context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            tls.settimeout(min(timeout, 1.0))
            try:
                tls.recv(1)  # with TLS 1.3 a refused client certificate is only reported after the handshake
            except (socket.timeout, TimeoutError):
                pass
            return "the TLS handshake succeeds: the peer closed the association itself"
    except ssl.SSLCertVerificationError as exc:
        return (f"the peer's certificate is not trusted ({exc.verify_message}): add its CA, or the certificate "
                "itself, to [dicom] tls_ca")
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if reason == "WRONG_VERSION_NUMBER":
            return "the peer did not answer with TLS: is its port the TLS port, and TLS on there?"
        if reason in ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"):
            return (f"the peer wants a client certificate it trusts: give it this box's certificate "
                    f"([dicom] tls_cert) or its CA [{reason}]")
        if reason.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_")):
            return f"the peer refused our TLS handshake (does it trust this box's certificate?) [{reason}]"
        return f"TLS handshake failed: {reason}"
    except (ConnectionError, socket.timeout, TimeoutError) as exc:
        return (f"the peer dropped our TLS handshake ({exc}): is its port the TLS port, and TLS on there?")
    except OSError as exc:
        return f"TLS handshake failed: {exc}"


def describe_failure(exc: BaseException, settings_hint: str = "") -> str:
    """Why a handshake failed, in words an admin can act on."""
    reason = getattr(exc, "reason", None) or ""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "no TLS handshake within the ACSE timeout"
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"):
        return f"not a TLS client (plain DICOM sent to the TLS port?) [{reason}]"
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"):
        return "the client sent no certificate and [dicom] tls_require_client_cert is on"
    if reason == "CERTIFICATE_VERIFY_FAILED":
        detail = getattr(exc, "verify_message", "") or str(exc)
        if "revoked" in detail:
            return f"the client's certificate is revoked ([dicom] tls_crl) ({detail})"
        if "CRL" in detail:
            return f"the client's certificate cannot be checked against [dicom] tls_crl ({detail})"
        return f"the client's certificate is not trusted by [dicom] tls_ca ({detail})"
    if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION"):
        return f"the client offers only an older TLS version than tls_min_version [{reason}]"
    if reason == "NO_SHARED_CIPHER":
        return "no cipher suite in common with the client [NO_SHARED_CIPHER]"
    if reason.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_")):
        return f"the client aborted the handshake (does it trust this box's certificate?) [{reason}]"
    return str(exc) or type(exc).__name__


def _closed_before_hello(exc: BaseException) -> bool:
    """A port probe or health check: connected and closed without a ClientHello."""
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)):
        return True
    return getattr(exc, "reason", "") == "UNEXPECTED_EOF_WHILE_READING"


class TlsAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded acceptor, handshaking in each connection's thread (see module docstring)."""

    handshake_timeout: float = 30.0
    on_failure: Callable[[str, str], None] | None = None  # (address, reason): e.g. the association_rejected event
    max_handshakes: int = 16  # handshakes in progress at once; more connections are closed at once
    _handshakes: threading.BoundedSemaphore | None = None  # made by start_tls_server; None = no bound

    def get_request(self):
        client, address = self.socket.accept()
        return self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False), address

    def process_request_thread(self, request, client_address) -> None:
        host = client_address[0]
        # Silent connections each hold a thread until the handshake timeout: bound how many at once.
        handshakes = self._handshakes
        if handshakes is not None and not handshakes.acquire(blocking=False):
            log.warning("TLS connection from %s refused: %d TLS handshakes already in progress", host,
                        self.max_handshakes)
            self.shutdown_request(request)
            return
        try:
            request.settimeout(self.handshake_timeout)
            request.do_handshake()
            request.settimeout(None)  # blocking again, as pynetdicom expects an accepted socket to be
        except (ssl.SSLError, OSError) as exc:
            if _closed_before_hello(exc):
                log.debug("connection from %s to the DICOM TLS port closed before a TLS handshake", host)
            else:
                reason = describe_failure(exc)
                log.warning("TLS handshake from %s failed: %s", host, reason)
                if self.on_failure is not None:
                    self.on_failure(host, reason)
            self.shutdown_request(request)
            return
        finally:
            if handshakes is not None:
                handshakes.release()
        if log.isEnabledFor(logging.DEBUG):
            subject = dict(x[0] for x in (request.getpeercert() or {}).get("subject", ()))
            log.debug("TLS from %s: %s %s, client certificate %s", host, request.version(),
                      request.cipher()[0], subject.get("commonName", "none"))
        super().process_request_thread(request, client_address)


def start_tls_server(ae, address: tuple[str, int], context: ssl.SSLContext, handlers: list, contexts,
                     handshake_timeout: float, on_failure: Callable[[str, str], None] | None = None,
                     max_handshakes: int = 16):
    """Like ``AE.start_server(address, block=False, ssl_context=context, ...)``, with our server class."""
    server = ae.make_server(address, contexts=contexts, ssl_context=context, evt_handlers=handlers,
                            server_class=TlsAssociationServer)
    server.handshake_timeout = handshake_timeout
    server.on_failure = on_failure
    server.max_handshakes = max(1, max_handshakes)
    server._handshakes = threading.BoundedSemaphore(server.max_handshakes)
    thread = threading.Thread(target=make_target(server.serve_forever),
                              name=f"TlsAcceptorServer@{datetime.now():%Y%m%d%H%M%S}", daemon=True)
    thread.start()
    ae._servers.append(server)  # as start_server does: AE.shutdown() and server.shutdown() expect it there
    return server
