"""The DICOM TLS listener against dcmtk's TLS-enabled tools (echoscu, storescu, findscu with +tls/+tla).

dcmtk 3.6.7 on Debian 12 is built with OpenSSL 3: its default security profile is the
non-downgrading BCP 195 profile (TLS 1.2+, AES-GCM suites), so these tests also show
the listener satisfies what a current modality asks for. getscu and movescu have no TLS
options in this dcmtk; what was stored is read back from the archive instead.
"""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pydicom
import pytest
import synth
from helpers import dcmtk, port_open, wait_until
from tls_support import start_tls_box, tls_options

sys.path.insert(0, str(Path(__file__).parent.parent / "dicom"))
import readback  # noqa: E402


def echo(port: int, *options: str, calling: str = "US_ROOM1", called: str = "PACSBOX"):
    return dcmtk("echoscu", *options, "-aet", calling, "-aec", called, "127.0.0.1", port, timeout=30)


def handshake_failures(box) -> list[str]:
    return [line for line in box.log().splitlines() if "TLS handshake from 127.0.0.1 failed" in line]


def test_store_find_and_echo_over_tls_with_a_client_certificate(tls_box, pki, tmp_path):
    client = tls_options(pki.ca, pki.client)
    assert echo(tls_box.tls_port, *client).returncode == 0
    files = synth.write_study(tmp_path / "in", n_series=1, per_series=2, patient_id="TLS1")
    sent = dcmtk("storescu", *client, "-aet", "US_ROOM1", "-aec", "PACSBOX", "127.0.0.1", tls_box.tls_port, *files)
    assert sent.returncode == 0, sent.stderr
    found = dcmtk("findscu", "-v", "-S", *client, "-aet", "US_ROOM1", "-aec", "PACSBOX", "-k",
                  "QueryRetrieveLevel=STUDY", "-k", "PatientID=TLS1", "-k", "StudyInstanceUID", "127.0.0.1",
                  tls_box.tls_port)
    study_uid = pydicom.dcmread(files[0]).StudyInstanceUID
    assert found.returncode == 0 and study_uid in found.stderr, found.stderr
    stored = readback.stored(tls_box.data_dir)
    for path in files:
        original = pydicom.dcmread(path)
        kept = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored[original.SOPInstanceUID]))
        assert kept.PixelData == original.PixelData and kept.PatientID == "TLS1"
    # the plain listener serves the same archive
    assert echo(tls_box.plain_port).returncode == 0


def test_anonymous_tls_client_is_served_when_client_certificates_are_optional(tls_box, pki):
    assert echo(tls_box.tls_port, *tls_options(pki.ca)).returncode == 0


def test_plain_dicom_on_the_tls_port_fails_and_the_listener_stays_up(tls_box, pki):
    before = len(handshake_failures(tls_box))
    plain = echo(tls_box.tls_port)
    assert plain.returncode != 0
    failures = wait_until(lambda: handshake_failures(tls_box)[before:], 10, what="the handshake failure log line")
    assert "not a TLS client (plain DICOM sent to the TLS port?)" in failures[0]
    assert echo(tls_box.tls_port, *tls_options(pki.ca, pki.client)).returncode == 0
    wait_until(lambda: any("TLS handshake failed: not a TLS client" in detail for detail in audited(tls_box)), 10,
               what="the failed handshake in the audit log")


def audited(box) -> list[str]:
    """The details of the audit log's DICOM association entries."""
    with readback.opened(box.data_dir) as (_archive, index):
        return [e.detail for e in index.audit.entries(action="dicom.association", limit=None)]


def test_client_certificate_from_an_untrusted_ca_is_refused(tls_box, pki):
    before = len(handshake_failures(tls_box))
    result = echo(tls_box.tls_port, *tls_options(pki.ca, pki.stranger_client))
    assert result.returncode != 0
    failures = wait_until(lambda: handshake_failures(tls_box)[before:], 10, what="the handshake failure log line")
    assert "the client's certificate is not trusted by [dicom] tls_ca" in failures[0]


def test_a_client_that_does_not_trust_the_box_certificate_gives_up(tls_box, pki):
    """What a modality configured with another CA sees: it refuses the box (no MITM past a pinned CA)."""
    result = echo(tls_box.tls_port, *tls_options(pki.stranger_ca))
    assert result.returncode != 0 and "certificate verify failed" in result.stderr, result.stderr


def test_wrong_called_ae_over_tls_is_rejected(tls_box, pki):
    result = echo(tls_box.tls_port, *tls_options(pki.ca, pki.client), called="NOTPACS")
    assert result.returncode != 0 and "Association Rejected" in result.stderr, result.stderr


def test_a_silent_connection_does_not_hold_up_the_tls_port(tls_box, pki):
    """pynetdicom handshakes in its accept thread; ours in each connection's thread (ACSE timeout 30 s)."""
    before = len(handshake_failures(tls_box))
    with socket.create_connection(("127.0.0.1", tls_box.tls_port)) as silent:
        started = time.monotonic()
        assert echo(tls_box.tls_port, *tls_options(pki.ca, pki.client)).returncode == 0
        assert time.monotonic() - started < 10
        silent.settimeout(0.1)
        with pytest.raises(socket.timeout):
            silent.recv(1)  # still open, still waiting for its ClientHello
    for _ in range(3):  # port probes: connect and close without a handshake
        socket.create_connection(("127.0.0.1", tls_box.tls_port)).close()
    assert echo(tls_box.tls_port, *tls_options(pki.ca, pki.client)).returncode == 0
    assert handshake_failures(tls_box)[before:] == []  # probes are not logged as failures


def test_silent_connections_cannot_pile_up(tls_box, pki):
    """At most max_associations (2 here) handshakes wait at once; the next connection is closed at once."""
    silent = [socket.create_connection(("127.0.0.1", tls_box.tls_port)) for _ in range(2)]
    try:
        wait_until(lambda: echo(tls_box.tls_port, *tls_options(pki.ca, pki.client)).returncode != 0, 10,
                   what="the handshake bound to refuse a third connection")
        assert "TLS connection from 127.0.0.1 refused: 2 TLS handshakes already in progress" in tls_box.log()
    finally:
        for s in silent:
            s.close()
    wait_until(lambda: echo(tls_box.tls_port, *tls_options(pki.ca, pki.client)).returncode == 0, 10,
               what="handshakes to be served again")


def test_both_listeners_share_one_association_budget(tls_box, pki):
    """max_associations (2 here) counts associations on either port together."""
    import ssl

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    context = ssl.create_default_context(cafile=str(pki.ca))
    context.check_hostname = False
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    ae = AE(ae_title="US_ROOM1")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", tls_box.plain_port, ae_title="PACSBOX"),
            ae.associate("127.0.0.1", tls_box.tls_port, ae_title="PACSBOX", tls_args=(context, "localhost"))]
    try:
        assert all(a.is_established for a in held)
        full = echo(tls_box.tls_port, *tls_options(pki.ca, pki.client))
        assert full.returncode != 0 and "Association Rejected" in full.stderr, full.stderr
        assert "Local Limit Exceeded" in full.stderr or "local-limit" in full.stderr.lower(), full.stderr
    finally:
        held[0].release()
    wait_until(lambda: echo(tls_box.tls_port, *tls_options(pki.ca, pki.client)).returncode == 0, 10,
               what="a free association slot")
    held[1].release()


# -- a clinic that requires client certificates and serves TLS only ----------------------------------------

@pytest.fixture(scope="module")
def strict_box(tmp_path_factory, pki):
    box = start_tls_box(tmp_path_factory.mktemp("strict"), pki, tls_only=True,
                        env={"PACS_DICOM_TLS_REQUIRE_CLIENT_CERT": "true", "PACS_DICOM_ALLOWED_CALLERS": "US_ROOM1"})
    yield box
    box.kill()


def test_tls_only_opens_no_plain_port(strict_box, pki):
    import requests

    assert not port_open(strict_box.plain_port)
    assert "listening on 127.0.0.1:%d" % strict_box.plain_port not in strict_box.log()
    assert echo(strict_box.tls_port, *tls_options(pki.ca, pki.client)).returncode == 0
    health = requests.get(f"{strict_box.url}/healthz", timeout=10)
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["dicom"]["detail"] == f"listening on TLS port {strict_box.tls_port}"


def test_health_names_both_listeners(tls_box):
    import requests

    detail = requests.get(f"{tls_box.url}/healthz", timeout=10).json()["checks"]["dicom"]["detail"]
    assert detail == f"listening on port {tls_box.plain_port}, TLS port {tls_box.tls_port}"


def test_required_client_certificate_refuses_a_client_without_one(strict_box, pki):
    before = len(handshake_failures(strict_box))
    result = echo(strict_box.tls_port, *tls_options(pki.ca))
    assert result.returncode != 0
    failures = wait_until(lambda: handshake_failures(strict_box)[before:], 10, what="the handshake failure log line")
    assert "the client sent no certificate and [dicom] tls_require_client_cert is on" in failures[0]


def test_association_policy_still_applies_behind_a_valid_certificate(strict_box, pki, tmp_path):
    client = tls_options(pki.ca, pki.client)
    refused = echo(strict_box.tls_port, *client, calling="NOT_ALLOWED")
    assert refused.returncode != 0 and "Association Rejected" in refused.stderr, refused.stderr
    path = synth.write_study(tmp_path, n_series=1, per_series=1, patient_id="TLS2")[0]
    sent = dcmtk("storescu", *client, "-aet", "US_ROOM1", "-aec", "PACSBOX", "127.0.0.1", strict_box.tls_port, path)
    assert sent.returncode == 0, sent.stderr
    assert pydicom.dcmread(path).SOPInstanceUID in readback.stored(strict_box.data_dir)


# -- the box's own self-signed certificate (what first boot makes) ------------------------------------------

def test_self_signed_box_certificate_pinned_by_the_modality(tmp_path):
    box = start_tls_box(tmp_path / "own", None)
    try:
        pinned = box.data_dir / "tls" / "cert.pem"
        assert echo(box.tls_port, "+tla", "+cf", str(pinned)).returncode == 0
        path = synth.write_study(tmp_path, n_series=1, per_series=1, patient_id="TLS3")[0]
        sent = dcmtk("storescu", "+tla", "+cf", pinned, "-aet", "US_ROOM1", "-aec", "PACSBOX", "127.0.0.1",
                     box.tls_port, path)
        assert sent.returncode == 0, sent.stderr
        assert "client certificates not asked for" in box.log()
    finally:
        box.kill()
