"""A DICOM TLS client certificate is tied to the AE title it calls as, and revoked ones are refused
(issue 14, item 12): required client certificates, one pinned peer, a CRL from the clinic CA."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from tls_certs import Authority, fingerprint
from tls_support import cli, start_tls_box, tls_options

from tests.helpers import dcmtk, wait_until


def echo(port: int, *options: str, calling: str):
    return dcmtk("echoscu", *options, "-aet", calling, "-aec", "PACSBOX", "127.0.0.1", port, timeout=30)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """A clinic CA with the box's certificate, three modality certificates and a CRL revoking one."""
    root = tmp_path_factory.mktemp("binding")
    ca = Authority(root / "ca", "Binding Clinic CA")
    certs = {
        "server": ca.issue("server", "pacsbox", server=True),
        "US_ROOM1": ca.issue("us1", "US_ROOM1", server=False),  # CN = its AE title
        "vendor": ca.issue("vendor", "Vendor DR 4000 SN 1234", server=False),  # CN no AE title: pinned
        "revoked": ca.issue("revoked", "US_ROOM2", server=False),
    }
    crl = ca.crl([certs["revoked"]], root / "clinic.crl.pem")
    return ca, certs, crl


@pytest.fixture(scope="module")
def bound_box(tmp_path_factory, clinic):
    ca, certs, crl = clinic
    box = start_tls_box(tmp_path_factory.mktemp("bound"), SimpleNamespace(ca=ca.pem.cert, server=certs["server"]),
                        tls_only=True,
                        env={"PACS_DICOM_TLS_REQUIRE_CLIENT_CERT": "true", "PACS_DICOM_TLS_CRL": str(crl)},
                        peers=(("DR1", "127.0.0.1", "104", "--cert-fingerprint", fingerprint(certs["vendor"])),
                               ("US_ROOM1", "127.0.0.1", "104"), ("US_ROOM2", "127.0.0.1", "104"),
                               ("CT1", "127.0.0.1", "104")))
    yield box
    box.kill()


def rejected_lines(box) -> list[str]:
    return [line for line in box.log().splitlines() if "over TLS rejected" in line]


def test_a_certificate_calls_only_as_the_ae_title_it_names(bound_box, clinic):
    ca, certs, _ = clinic
    us1 = tls_options(ca.pem.cert, certs["US_ROOM1"])
    assert echo(bound_box.tls_port, *us1, calling="US_ROOM1").returncode == 0
    impostor = echo(bound_box.tls_port, *us1, calling="CT1")  # a registered peer, another's certificate
    assert impostor.returncode != 0 and "Association Rejected" in impostor.stderr, impostor.stderr
    line = wait_until(lambda: rejected_lines(bound_box), 10, what="the rejection in the log")[-1]
    assert "association from CT1 at 127.0.0.1 over TLS rejected: its client certificate names 'US_ROOM1'" in line
    assert "modality update CT1 --cert-fingerprint" in line


def test_a_pinned_peer_must_present_its_own_certificate(bound_box, clinic):
    ca, certs, _ = clinic
    assert echo(bound_box.tls_port, *tls_options(ca.pem.cert, certs["vendor"]), calling="DR1").returncode == 0
    before = len(rejected_lines(bound_box))
    other = echo(bound_box.tls_port, *tls_options(ca.pem.cert, certs["US_ROOM1"]), calling="DR1")
    assert other.returncode != 0 and "Association Rejected" in other.stderr, other.stderr
    line = wait_until(lambda: rejected_lines(bound_box)[before:], 10, what="the rejection in the log")[0]
    assert "is not the one pinned for DR1" in line
    # the pinned certificate does not let its holder call as anybody else either
    assert echo(bound_box.tls_port, *tls_options(ca.pem.cert, certs["vendor"]), calling="CT1").returncode != 0


def test_the_pin_is_set_and_cleared_from_the_cli(bound_box, clinic):
    _, certs, _ = clinic
    done = cli(bound_box.data_dir, "modality", "update", "CT1", "--cert-fingerprint", str(certs["vendor"].cert))
    assert done.returncode == 0, done.stderr
    assert "must present the client certificate sha256 " in done.stdout
    bad = cli(bound_box.data_dir, "modality", "update", "CT1", "--cert-fingerprint", "12:34")
    assert bad.returncode != 0 and "is not a SHA-256 fingerprint" in bad.stderr
    cleared = cli(bound_box.data_dir, "modality", "update", "CT1", "--cert-fingerprint", "")
    assert cleared.returncode == 0 and "must present" not in cleared.stdout, cleared.stderr


def test_a_revoked_certificate_is_refused(bound_box, clinic):
    ca, certs, _ = clinic
    revoked = echo(bound_box.tls_port, *tls_options(ca.pem.cert, certs["revoked"]), calling="US_ROOM2")
    assert revoked.returncode != 0
    line = wait_until(lambda: [x for x in bound_box.log().splitlines() if "TLS handshake from" in x], 10,
                      what="the handshake failure in the log")[-1]
    assert "the client's certificate is revoked ([dicom] tls_crl)" in line
    assert echo(bound_box.tls_port, *tls_options(ca.pem.cert, certs["US_ROOM1"]), calling="US_ROOM1").returncode == 0


def test_admin_peer_form_pins_a_certificate(bound_box, clinic):
    import re

    import requests

    from tests.helpers import ADMIN_PASSWORD

    def csrf(html: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    ca, certs, _ = clinic
    web = requests.Session()
    web.post(f"{bound_box.url}/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                             "csrf_token": csrf(web.get(f"{bound_box.url}/login").text)})
    page = web.get(f"{bound_box.url}/admin/peers").text
    form = {"csrf_token": csrf(page), "ae_title": "WEBPIN", "host": "127.0.0.1", "port": "104", "can_store": "on"}
    refused = web.post(f"{bound_box.url}/admin/peers", data={**form, "cert_fingerprint": "not-a-fingerprint"})
    assert "is not a SHA-256 fingerprint" in refused.text
    web.post(f"{bound_box.url}/admin/peers", data={**form, "cert_fingerprint": fingerprint(certs["vendor"])})
    edit = web.get(f"{bound_box.url}/admin/peers/WEBPIN/edit").text
    pinned = fingerprint(certs["vendor"]).rpartition("=")[2].replace(":", "").lower()
    assert f'name="cert_fingerprint" value="{pinned}"' in edit
    vendor = tls_options(ca.pem.cert, certs["vendor"])
    assert wait_until(lambda: echo(bound_box.tls_port, *vendor, calling="WEBPIN").returncode == 0, 15,
                      what="the pinned peer to be served (the registry snapshot is 2 s old at most)")
