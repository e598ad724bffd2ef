"""DICOM TLS settings in-process: the contexts, the errors an admin gets, and the start-up refusal."""
from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import CLI, free_port
from tls_certs import Authority

from appliance import config as config_mod
from appliance.dicom.tls import TlsSettings, check_listeners, client_context, server_context
from appliance.errors import ConfigError


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    ca = Authority(tmp_path_factory.mktemp("units"))
    return ca, ca.issue("server", "pacsbox", server=True)


def settings(material, **changes) -> TlsSettings:
    ca, server = material
    return replace(TlsSettings(port=2762, cert=server.cert, key=server.key, ca=ca.pem.cert), **changes)


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str:
    """Handshake over a socket pair; return the negotiated version or raise the server's error."""
    a, b = socket.socketpair()
    outcome = {}

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                outcome["version"] = s.version()
        except (ssl.SSLError, OSError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname="localhost"):
            pass
    except (ssl.SSLError, OSError):
        pass
    thread.join(10)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["version"]


def test_defaults_come_from_the_box_certificate_and_relative_paths_from_the_data_dir(tmp_path):
    cfg = config_mod.load(tmp_path, env={"PACS_DICOM_TLS_PORT": "2762", "PACS_DICOM_TLS_CA": "pki/ca.pem"})
    s = TlsSettings.from_config(cfg)
    assert (s.port, s.cert, s.key, s.ca) == (2762, tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem",
                                             tmp_path / "pki" / "ca.pem")
    assert (s.require_client_cert, s.min_version) == (False, "1.2")


def test_client_certificate_modes(material):
    assert server_context(settings(material)).verify_mode == ssl.CERT_OPTIONAL
    assert server_context(settings(material, require_client_cert=True)).verify_mode == ssl.CERT_REQUIRED
    assert server_context(settings(material, ca=None)).verify_mode == ssl.CERT_NONE
    assert server_context(settings(material)).minimum_version == ssl.TLSVersion.TLSv1_2


def test_minimum_version_1_3_refuses_a_tls_1_2_client(material):
    ca, _ = material
    server = server_context(settings(material, min_version="1.3"))
    client = ssl.create_default_context(cafile=str(ca.pem.cert))
    assert handshake(server, client) == "TLSv1.3"
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError) as caught:
        handshake(server, client)
    assert caught.value.reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION")


def test_client_context_trusts_tls_ca_only(material, tmp_path):
    ca, _ = material
    server = server_context(settings(material, ca=None))
    assert handshake(server, client_context(settings(material))).startswith("TLSv1.")
    stranger = Authority(tmp_path / "stranger", "Stranger CA")
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(server, client_context(settings(material, ca=stranger.pem.cert)))


@pytest.mark.parametrize("changes, message", [
    ({"cert": Path("/nonexistent/cert.pem")}, "`pacs-appliance tls renew`"),
    ({"ca": None, "require_client_cert": True}, "tls_require_client_cert is on but tls_ca is empty"),
    ({"ca": Path("/nonexistent/ca.pem")}, "tls_ca /nonexistent/ca.pem does not exist"),
    ({"min_version": "1.0"}, "tls_min_version must be one of 1.2, 1.3"),
])
def test_bad_settings_are_explained(material, changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        server_context(settings(material, **changes))


def test_a_key_that_does_not_belong_to_the_certificate(material, tmp_path):
    ca, server = material
    other = ca.issue("other", "other", server=True)
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        server_context(settings(material, key=other.key))


def test_listener_combinations():
    check_listeners(11112, 2762, False)
    check_listeners(11112, 2762, True)
    check_listeners(11112, 0, False)
    with pytest.raises(ConfigError, match="no DICOM port would be open"):
        check_listeners(11112, 0, True)
    with pytest.raises(ConfigError, match="its own port"):
        check_listeners(2762, 2762, False)


def test_serve_refuses_to_start_without_the_certificate(data_dir):
    """tls_port set on a checkout that never made a certificate: a clear error, exit code 2, no half-started box."""
    env = dict(os.environ, PACS_DICOM_TLS_PORT=str(free_port()), PACS_DICOM_PORT=str(free_port()),
               PACS_HTTP_PORT=str(free_port()), PACS_DICOM_HOST="127.0.0.1", PACS_HTTP_HOST="127.0.0.1")
    done = subprocess.run(CLI + ["serve", "--data", str(data_dir)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert "tls_cert" in done.stderr and "pacs-appliance tls renew" in done.stderr


@pytest.mark.parametrize("case", ["no client certificate", "untrusted server", "plain server"])
def test_diagnose_names_why_a_tls_association_failed(material, tmp_path, case):
    """What `modality echo` and the forwarding queue report when a TLS peer cannot be reached."""
    from appliance.dicom.tls import diagnose

    ca, server = material
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server_ctx = server_context(settings(material, require_client_cert=True))

    def serve_once():
        conn, _ = listener.accept()
        with conn:
            if case == "plain server":
                conn.recv(1024)
                conn.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # an A-ABORT, as a DICOM port would
                return
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    trusted = ca.pem.cert if case != "untrusted server" else Authority(tmp_path / "other", "Other CA").pem.cert
    client = client_context(replace(settings(material, ca=trusted), cert=tmp_path / "none.pem"))  # no client cert
    reason = diagnose((client, "localhost"), "127.0.0.1", port, timeout=5)
    thread.join(5)
    listener.close()
    expected = {"no client certificate": "the peer wants a client certificate it trusts",
                "untrusted server": "the peer's certificate is not trusted",
                "plain server": "is its port the TLS port, and TLS on there?"}[case]
    assert expected in reason, reason
