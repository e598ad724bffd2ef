"""The box's TLS certificate, and a real appliance process serving HTTPS with HTTP redirecting to it."""
from __future__ import annotations

import socket
import ssl
import subprocess
import sys

import pytest
import requests
from cryptography import x509

from appliance import tls
from appliance.errors import ConfigError
from helpers import ADMIN_PASSWORD, Server, free_port, init_data_dir, port_open, wait_until

CLI = [sys.executable, "-m", "appliance"]


def test_self_signed_certificate_names_the_box_and_matches_its_key():
    cert_pem, key_pem = tls.make_self_signed("pacs-01")
    cert = tls.check_pair(cert_pem, key_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"pacs-01", "pacs-01.local", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 3650
    assert len(tls.fingerprint(cert_pem).split(":")) == 32


def test_a_key_from_another_certificate_is_refused(tmp_path):
    cert_pem, _ = tls.make_self_signed("a")
    _, other_key = tls.make_self_signed("b")
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        tls.install(tmp_path, cert_pem, other_key)
    with pytest.raises(ConfigError, match="not PEM"):
        tls.install(tmp_path, b"junk", other_key)
    assert not tls.files(tmp_path).exist()


def test_tls_cli_install_renew_show(tmp_path):
    cert_pem, key_pem = tls.make_self_signed("clinic-ca-issued")
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    (tmp_path / "d").mkdir()
    out = subprocess.run(CLI + ["tls", "install", "--data", str(tmp_path / "d"), "--cert", str(tmp_path / "c.pem"),
                                "--key", str(tmp_path / "k.pem")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert tls.fingerprint(cert_pem) in out.stdout
    assert (tmp_path / "d" / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    shown = subprocess.run(CLI + ["tls", "show", "--data", str(tmp_path / "d")], capture_output=True, text=True)
    assert "clinic-ca-issued" in shown.stdout
    renewed = subprocess.run(CLI + ["tls", "renew", "--data", str(tmp_path / "d"), "--hostname", "pacs-02"],
                             capture_output=True, text=True)
    assert renewed.returncode == 0 and tls.fingerprint(cert_pem) not in renewed.stdout
    bad = subprocess.run(CLI + ["tls", "install", "--data", str(tmp_path / "d"), "--cert", str(tmp_path / "c.pem"),
                                "--key", str(tmp_path / "d" / "tls" / "key.pem")], capture_output=True, text=True)
    assert bad.returncode == 2 and "does not belong to the certificate" in bad.stderr


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    data_dir = init_data_dir(tmp_path_factory.mktemp("https") / "data")
    cert_pem, key_pem = tls.make_self_signed("pacs-test")
    tls.install(data_dir, cert_pem, key_pem)
    tls_port = free_port()
    srv = Server(data_dir, env={"PACS_HTTP_TLS": "true", "PACS_HTTP_TLS_PORT": str(tls_port)})
    srv.start()
    wait_until(lambda: port_open(tls_port), 10, what="the HTTPS port")
    srv.tls_port = tls_port
    srv.cert = data_dir / "tls" / "cert.pem"
    yield srv
    srv.kill()


def test_https_serves_the_app_and_http_redirects(https_server):
    base = f"https://127.0.0.1:{https_server.tls_port}"
    # The certificate verifies against itself for 127.0.0.1 (in its SAN).
    r = requests.get(f"{base}/healthz", verify=str(https_server.cert), timeout=10)
    assert r.status_code == 200 and r.json()["status"] in ("ok", "warn")  # warn: a nearly full build disk

    plain = f"http://127.0.0.1:{https_server.http_port}"
    r = requests.get(f"{plain}/login?next=/studies", allow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["Location"] == f"https://127.0.0.1:{https_server.tls_port}/login?next=/studies"
    r = requests.post(f"{plain}/login", data={"x": "1"}, allow_redirects=False, timeout=10)
    assert r.status_code == 308  # a POST stays a POST
    # The redirect keeps the name the browser used for the box.
    r = requests.get(f"{plain}/", headers={"Host": "pacs-01.local"}, allow_redirects=False, timeout=10)
    assert r.headers["Location"] == f"https://pacs-01.local:{https_server.tls_port}/"

    # Plain HTTP on the HTTPS port is refused (a 400 or a reset), never served.
    try:
        r = requests.get(f"http://127.0.0.1:{https_server.tls_port}/healthz", timeout=10)
    except requests.ConnectionError:
        pass
    else:
        assert r.status_code == 400


def test_login_over_https_sets_secure_cookies(https_server):
    import re

    s = requests.Session()
    base = f"https://127.0.0.1:{https_server.tls_port}"
    page = s.get(f"{base}/login", verify=str(https_server.cert), timeout=10)
    assert page.status_code == 200
    form = {"username": "admin", "password": ADMIN_PASSWORD}
    token = re.search(r'name="csrf_token"\s+value="([^"]+)"', page.text)
    if token:
        form["csrf_token"] = token.group(1)
    r = s.post(f"{base}/login", data=form, verify=str(https_server.cert), allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303) and "/login" not in r.headers.get("Location", ""), r.text[:500]
    cookies = r.raw.headers.getlist("Set-Cookie")
    assert cookies and all("secure" in c.lower() for c in cookies), cookies


def test_a_stalled_tls_handshake_does_not_block_other_clients(https_server):
    # A client that connects and says nothing holds the accept loop at most HANDSHAKE_TIMEOUT.
    with socket.create_connection(("127.0.0.1", https_server.tls_port)):
        ctx = ssl.create_default_context(cafile=str(https_server.cert))
        with socket.create_connection(("127.0.0.1", https_server.tls_port), timeout=15) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
            pass


def test_tls_on_without_a_certificate_fails_with_a_clear_message(data_dir):
    srv = Server(data_dir, env={"PACS_HTTP_TLS": "true", "PACS_HTTP_TLS_PORT": str(free_port())})
    with pytest.raises((RuntimeError, TimeoutError)):
        srv.start(timeout=15)
    assert "pacs-appliance tls renew" in srv.log()
