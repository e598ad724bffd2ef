"""Request bodies (issue 14, item 4): authenticated before they are read, bounded, never on a disk in plaintext.

The web server runs in this process on a loopback port (the same ``WebServer`` the appliance
serves with); requests are written on raw sockets so a test can claim a body it never sends.
"""
from __future__ import annotations

import base64
import os
import socket
import tempfile

import pytest

from helpers import ADMIN_PASSWORD, wait_until

from appliance.app import build
from appliance.config import load

MARKER = b"PLAINTEXT^MARKER^PATIENT"


@pytest.fixture
def server(data_dir):
    from web.server import WebServer

    appliance = build(load(data_dir, env={"PACS_HTTP_MAX_UPLOAD_MB": "4"}), with_web=False)
    web = WebServer(appliance, "127.0.0.1", 0)
    web.start()
    yield web.bound_address
    web.stop()
    appliance.index.close()


def _connect(address) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    return sock


def _head(method: str, path: str, length: int, content_type: str, auth: tuple[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}",
             f"Content-Length: {length}"]
    if auth:
        lines.append("Authorization: Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status(sock: socket.socket) -> int:
    """The status of the response, read without having sent the body (a timeout fails the test)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("path,content_type", [
    ("/login", "application/x-www-form-urlencoded"),
    ("/dicomweb/studies", 'multipart/related; type="application/dicom"; boundary=x'),
    ("/admin/users", "multipart/form-data; boundary=x"),
])
def test_anonymous_big_body_gets_413_before_it_is_sent(server, path, content_type):
    """waitress waited for (and spooled) the whole claimed 100 MiB before the app saw the request."""
    with _connect(server) as sock:
        sock.sendall(_head("POST", path, 100 << 20, content_type))
        assert _status(sock) == 413


def test_small_anonymous_body_still_reaches_the_login_form(server):
    body = b"username=admin&password=wrong"
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/login", len(body), "application/x-www-form-urlencoded") + body)
        assert _status(sock) == 400  # the form's CSRF check answered: the body was read


def test_wrong_credentials_are_refused_before_the_body(server):
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/dicomweb/studies", 100 << 20, 'multipart/related; boundary=x',
                           auth=("admin", "not-the-password")))
        assert _status(sock) == 413  # no valid credentials: treated as anonymous


def test_authenticated_upload_is_bounded_by_max_upload_mb(server):
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/dicomweb/studies", 5 << 20, 'multipart/related; type="application/dicom"; '
                           "boundary=x", auth=("admin", ADMIN_PASSWORD)))
        assert _status(sock) == 413  # [http] max_upload_mb = 4 in this fixture


def _open_files_holding(marker: bytes) -> list[str]:
    """Regular files this process has open (spooled bodies are unlinked, so only fds show them) that hold ``marker``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        link = f"/proc/self/fd/{fd}"
        try:
            target = os.readlink(link)
            if target.startswith(("socket:", "pipe:", "anon_inode:", "/dev/")):
                continue
            with open(link, "rb") as f:
                if marker in f.read(8 << 20):
                    found.append(target)
        except OSError:
            continue
    return found


def test_an_upload_in_progress_is_not_spooled_to_disk(server):
    """waitress spooled any body over 512 KiB to an unlinked file in $TMPDIR: the patient name was readable there."""
    boundary = "b0undary"
    part = MARKER * ((3 << 20) // len(MARKER))  # 3 MiB of "patient data", never terminated
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/dicomweb/studies", len(head) + len(part) + 64,
                           f'multipart/related; type="application/dicom"; boundary={boundary}',
                           auth=("admin", ADMIN_PASSWORD)) + head + part)
        # Give the server time to take what was sent (waitress spooled it within milliseconds).
        with pytest.raises(TimeoutError):
            spooled = wait_until(lambda: _open_files_holding(MARKER), timeout=3, what="a spooled body")
            pytest.fail(f"the request body lies on disk in plaintext: {spooled} (TMPDIR {tempfile.gettempdir()})")


def _chunked_head(path: str, auth=None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked",
             'Content-Type: multipart/related; type="application/dicom"; boundary=b0undary']
    if auth:
        lines.append("Authorization: Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_anonymous_chunked_body_is_refused_at_once(server):
    with _connect(server) as sock:
        sock.sendall(_chunked_head("/dicomweb/studies"))
        assert _status(sock) == 413


def test_authenticated_chunked_body_is_cut_off_at_max_upload_mb(server):
    chunk = b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + MARKER * 40_000  # ~1 MiB
    with _connect(server) as sock:
        sock.sendall(_chunked_head("/dicomweb/studies", auth=("admin", ADMIN_PASSWORD)))
        try:
            for _ in range(8):  # 8 MiB against the 4 MiB limit; the server stops reading at 4
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except OSError:
            pass  # the server answered and closed while we were still sending
        assert _status(sock) == 413
