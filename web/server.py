"""Serving the Flask app inside the appliance process, over HTTP or HTTPS, with cheroot.

Plain HTTP (``[http] tls = false``, the default in a checkout): cheroot (CherryPy's
WSGI server) on ``[http] port``.

HTTPS (``[http] tls = true``, set by first boot on the appliance image): TLS is
terminated in this process by cheroot on ``[http] tls_port`` with ``<data dir>/tls/``'s
certificate, and ``[http] port`` answers every request with a redirect to the
HTTPS URL.

Why cheroot for both (waitress served plain HTTP until issue 14): cheroot hands the
app ``wsgi.input`` straight from the socket, so the app authenticates a request and
bounds its body (``web.auth.limit_body``) before a byte of it is read, and nothing
is spooled. waitress read every body before calling the app, up to 1 GiB, and
spooled any over 512 KiB to a temporary file in plaintext. A body the app did not
read is not drained either: the connection is closed after the response
(``_NoDrainGateway``), since cheroot would read the rest into memory at once. Why in the process rather than a TLS front (nginx, stunnel) in the
image: one process and one hardened unit to run and restart, the client's real
address reaches the audit log without proxy headers, and the test suite runs
exactly the code the box runs. Session cookies are Secure whenever TLS is on.
"""
from __future__ import annotations

import logging
import ssl
import threading
from urllib.parse import quote, urlsplit

from cheroot import wsgi

from . import create_app

log = logging.getLogger(__name__)

# A client that connects and never finishes the TLS handshake holds cheroot's
# accept loop; bound how long (a LAN client completes it in milliseconds).
HANDSHAKE_TIMEOUT = 5.0
# The request line and headers together (a long QIDO or frame list is a few KiB); more gets 413/414.
MAX_HEADER_BYTES = 64 << 10


class WebServer:
    def __init__(self, appliance, host: str, port: int, threads: int = 8):
        self.app = create_app(appliance)
        http = appliance.config.http
        self.tls = bool(http.tls)
        self._servers: list[_Runner] = []
        if not self.tls:
            self._servers.append(_Cheroot(self.app, host, port, threads, max_body=http.max_upload_mb << 20))
            return
        from appliance import tls as tls_files

        files = tls_files.files(appliance.config.data_dir)
        if not files.exist():
            from appliance.errors import ConfigError

            raise ConfigError(f"[http] tls is on but {files.cert} or {files.key} is missing: make them with "
                              f"`pacs-appliance tls renew` (self-signed) or `pacs-appliance tls install`")
        self.app.config.update(SESSION_COOKIE_SECURE=True, PREFERRED_URL_SCHEME="https")
        https = _Cheroot(self.app, host, http.tls_port, threads, max_body=http.max_upload_mb << 20,
                         cert=files.cert, key=files.key)
        self._servers.append(https)
        self._servers.append(_Cheroot(redirect_app(https.bound_address[1]), host, port, 2, max_body=0))

    @property
    def bound_address(self) -> tuple[str, int]:
        """Where the web UI is served (the HTTPS listener when TLS is on)."""
        return self._servers[0].bound_address

    @property
    def redirect_address(self) -> tuple[str, int] | None:
        """The plain-HTTP listener that redirects to HTTPS, when TLS is on."""
        return self._servers[1].bound_address if self.tls else None

    def start(self) -> None:
        for server in self._servers:
            server.start()
        scheme = "https" if self.tls else "http"
        log.info("web UI listening on %s://%s:%d", scheme, *self.bound_address)
        if self.tls:
            log.info("http://%s:%d redirects to HTTPS", *self.redirect_address)

    def stop(self) -> None:
        for server in reversed(self._servers):
            server.stop()


def redirect_app(https_port: int):
    """A WSGI app that sends every request to the same path on HTTPS."""

    def app(environ, start_response):
        host = urlsplit("//" + environ.get("HTTP_HOST", "")).hostname or environ.get("SERVER_NAME", "")
        if not host or any(c in host for c in "/\\@ \r\n"):
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"Use HTTPS.\n"]
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        netloc = host if https_port == 443 else f"{host}:{https_port}"
        path = quote(environ.get("PATH_INFO", "/"), safe="/:@!$&'()*+,;=-._~%")
        query = environ.get("QUERY_STRING", "")
        location = f"https://{netloc}{path}" + (f"?{query}" if query else "")
        # 301 for reads; 308 keeps a POST a POST.
        status = "301 Moved Permanently" if environ.get("REQUEST_METHOD") in ("GET", "HEAD") else \
            "308 Permanent Redirect"
        start_response(status, [("Location", location), ("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]

    return app


class _Runner:
    bound_address: tuple[str, int]

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _NoDrainGateway(wsgi.Gateway_10):
    """Closes the connection after a response when the app left part of the body unread.

    cheroot otherwise reads the rest of a Content-Length body, in one ``read``, before the
    next request on the connection: a 413 to an anonymous 100 MiB POST would still take
    100 MiB of memory (RFC 9112 9.6 lets a server close instead).
    """

    def start_response(self, status, headers, exc_info=None):
        write = super().start_response(status, headers, exc_info)
        req = self.req
        rfile = getattr(req, "rfile", None)
        unread = (not getattr(rfile, "closed", False)) if req.chunked_read else getattr(rfile, "remaining", 0) > 0
        if unread:
            req.close_connection = True
        return write


class _Cheroot(_Runner):
    def __init__(self, app, host: str, port: int, threads: int, max_body: int, cert=None, key=None):
        self._server = wsgi.Server((host, port), app, numthreads=threads, server_name="pacs-appliance", timeout=30)
        self._server.gateway = _NoDrainGateway
        # A backstop for web.auth.limit_body: cheroot answers 413 itself past this (0: no limit; the
        # redirect listener reads no body at all). 1 MiB above the app's own limit, so that a chunked
        # body is stopped by the app's clear 413 rather than by cheroot's error in the middle of a read.
        self._server.max_request_body_size = max_body + (1 << 20) if max_body else 0
        self._server.max_request_header_size = MAX_HEADER_BYTES  # cheroot's default is no limit
        if cert is not None:
            from cheroot.ssl.builtin import BuiltinSSLAdapter

            class Adapter(BuiltinSSLAdapter):
                def wrap(self, sock):
                    sock.settimeout(HANDSHAKE_TIMEOUT)
                    return super().wrap(sock)

            adapter = Adapter(str(cert), str(key))
            adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._server.ssl_adapter = adapter
        self._server.prepare()  # binds now, so READY=1 is only sent once the port is open
        self._thread: threading.Thread | None = None
        self._name = "web-tls" if cert is not None else "web"

    @property
    def bound_address(self) -> tuple[str, int]:
        return self._server.socket.getsockname()[:2]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
