"""Peers flagged for DICOM TLS: echo, C-MOVE sub-operations and forwarding go to dcmtk's storescp +tls.

storescp runs in dcmtk's default mode, which requires a client certificate: the box must present
its own ([dicom] tls_cert) and check the peer's against [dicom] tls_ca, so every test here is mutual TLS.
"""
from __future__ import annotations

import pydicom
import pytest
import synth
from helpers import dcmtk, wait_until
from tls_support import TlsStoreScp, cli, start_tls_box


@pytest.fixture(scope="module")
def peer_box(tmp_path_factory, pki):
    root = tmp_path_factory.mktemp("peers")
    # The peer's certificate comes from the clinic CA (the box's own is reused: any clinic-issued one would do).
    scp = TlsStoreScp(root / "tlsscp", "TLSSCP", pki.server, pki.ca).start()
    impostor = TlsStoreScp(root / "impostor", "IMPOSTOR", pki.stranger_server, pki.ca).start()
    plain = TlsStoreScp(root / "plainscp", "PLAINSCP", None, None).start()
    box = start_tls_box(root, pki, env={"PACS_FORWARD_RULES": "TLSSCP calling=FWDSRC"}, peers=(
        ("TLSSCP", "127.0.0.1", str(scp.port), "--tls"),  # the first one is added with `pacs-appliance modality add`
        ("TESTSCU", "127.0.0.1", "9"), ("FWDSRC", "127.0.0.1", "9"),
        ("IMPOSTOR", "127.0.0.1", str(impostor.port), "--tls"),
        ("PLAINSCP", "127.0.0.1", str(plain.port), "--tls")))
    box.scp = scp
    yield box
    box.kill()
    for peer in (scp, impostor, plain):
        peer.stop()


def received_uids(scp) -> set[str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in scp.files()}


def test_cli_lists_and_echoes_a_tls_peer(peer_box):
    listed = cli(peer_box.data_dir, "modality", "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith("TLSSCP"))
    assert row.split()[3] == "yes", listed.stdout  # the tls column
    echoed = cli(peer_box.data_dir, "modality", "echo", "TLSSCP", env=peer_box.env)
    assert echoed.returncode == 0 and "answered C-ECHO over TLS" in echoed.stdout, echoed.stdout + echoed.stderr


def echo_in_process(box, ae_title: str):
    """What the admin UI's Test button runs (PeerRegistry.echo), with the box's settings."""
    from appliance.app import build
    from appliance.config import load

    app = build(load(box.data_dir, env=box.env), with_web=False)
    try:
        return app.peers.echo(ae_title)
    finally:
        app.index.close()


def test_echo_names_an_untrusted_peer_certificate(peer_box):
    result = echo_in_process(peer_box, "IMPOSTOR")
    assert not result.ok
    assert "the peer's certificate is not trusted" in result.message and "[dicom] tls_ca" in result.message, result


def test_echo_names_a_peer_that_does_not_speak_tls(peer_box):
    result = echo_in_process(peer_box, "PLAINSCP")
    assert not result.ok and "is its port the TLS port, and TLS on there?" in result.message, result


def test_c_move_to_a_tls_destination(peer_box, tmp_path):
    files = synth.write_study(tmp_path, n_series=1, per_series=2, patient_id="TLSMOVE")
    sent = dcmtk("storescu", "-aet", "TESTSCU", "-aec", "PACSBOX", "127.0.0.1", peer_box.dicom_port, *files)
    assert sent.returncode == 0, sent.stderr
    moved = dcmtk("movescu", "-v", "-S", "-aet", "TESTSCU", "-aec", "PACSBOX", "-aem", "TLSSCP", "-k",
                  "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={pydicom.dcmread(files[0]).StudyInstanceUID}",
                  "127.0.0.1", peer_box.dicom_port)
    assert moved.returncode == 0 and "Received Final Move Response (Success)" in moved.stderr, moved.stderr
    want = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert want <= received_uids(peer_box.scp)


def test_c_move_to_an_impostor_fails_cleanly(peer_box, tmp_path):
    path = synth.write_study(tmp_path, n_series=1, per_series=1, patient_id="TLSMOVE2")[0]
    assert dcmtk("storescu", "-aet", "TESTSCU", "-aec", "PACSBOX", "127.0.0.1", peer_box.dicom_port,
                 path).returncode == 0
    moved = dcmtk("movescu", "-v", "-S", "-aet", "TESTSCU", "-aec", "PACSBOX", "-aem", "IMPOSTOR", "-k",
                  "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={pydicom.dcmread(path).StudyInstanceUID}",
                  "127.0.0.1", peer_box.dicom_port)
    # pynetdicom answers 0xA801 when it cannot associate with the destination; nothing reached the impostor
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in moved.stderr, moved.stderr
    assert "certificate verify failed" in peer_box.log()


def test_forwarding_to_a_tls_peer(peer_box, tmp_path):
    path = synth.write_study(tmp_path, n_series=1, per_series=1, patient_id="TLSFWD")[0]
    sent = dcmtk("storescu", "-aet", "FWDSRC", "-aec", "PACSBOX", "127.0.0.1", peer_box.dicom_port, path)
    assert sent.returncode == 0, sent.stderr
    uid = pydicom.dcmread(path).SOPInstanceUID
    wait_until(lambda: uid in received_uids(peer_box.scp), 30, what="the forwarded instance at the TLS peer")


def test_admin_peer_form_sets_and_clears_tls(peer_box):
    import re

    import requests
    from helpers import ADMIN_PASSWORD

    def csrf(html: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    def row(html: str, ae: str) -> str:
        return next(r for r in html.split("<tr>") if f"<strong>{ae}</strong>" in r)

    web = requests.Session()
    web.post(f"{peer_box.url}/login", data={"username": "admin", "password": ADMIN_PASSWORD,
                                            "csrf_token": csrf(web.get(f"{peer_box.url}/login").text)})
    page = web.get(f"{peer_box.url}/admin/peers").text
    assert f"DICOM TLS port <code>{peer_box.tls_port}</code>" in page  # where modalities should send with TLS
    assert ">TLS</span>" in row(page, "TLSSCP") and ">TLS</span>" not in row(page, "TESTSCU")
    form = {"csrf_token": csrf(page), "host": "127.0.0.1", "port": "2762", "can_receive_moves": "on"}
    page = web.post(f"{peer_box.url}/admin/peers", data={**form, "ae_title": "WEBTLS", "tls": "on"}).text
    assert ">TLS</span>" in row(page, "WEBTLS")
    page = web.post(f"{peer_box.url}/admin/peers/WEBTLS", data=form).text  # the box unticked
    assert ">TLS</span>" not in row(page, "WEBTLS")


def test_storage_commitment_over_tls_both_ways(peer_box, pki, tmp_path):
    """A pynetdicom modality stores and asks for commitment over the box's TLS port with its client
    certificate, hangs up, and gets the N-EVENT-REPORT on a new association to its own TLS listener."""
    import ssl
    import threading

    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StorageCommitmentPushModel
    from tls_support import register_peers

    from helpers import free_port

    port = free_port()
    register_peers(peer_box.data_dir, [("COMMITTLS", "127.0.0.1", str(port), "--tls")])
    # the modality's TLS listener: the clinic CA's certificate, and the box must present one
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    server_ctx.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    reports = []
    got = threading.Event()

    def on_report(event):
        reports.append((event.event_type, event.event_information, event.assoc.dul.socket.socket.version()))
        got.set()
        return 0x0000, None

    modality = AE(ae_title="COMMITTLS")
    modality.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    listener = modality.start_server(("127.0.0.1", port), block=False, ssl_context=server_ctx,
                                     evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        path = synth.write_study(tmp_path, n_series=1, per_series=1, patient_id="TLSCOMMIT")[0]
        ds = pydicom.dcmread(path)
        client_ctx = ssl.create_default_context(cafile=str(pki.ca))
        client_ctx.load_cert_chain(str(pki.client.cert), str(pki.client.key))
        client_ctx.check_hostname = False
        modality.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        modality.add_requested_context(StorageCommitmentPushModel)
        assoc = modality.associate("127.0.0.1", peer_box.tls_port, ae_title="PACSBOX",
                                   tls_args=(client_ctx, "localhost"))
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        request = Dataset()
        request.TransactionUID = pydicom.uid.generate_uid()
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        request.ReferencedSOPSequence = [ref]
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        assert status.Status == 0x0000
        assoc.release()  # do not wait: the report must come on a new association, over TLS
        assert got.wait(20), "no N-EVENT-REPORT on a new TLS association:\n" + peer_box.log()[-2000:]
        event_type, info, version = reports[0]
        assert event_type == 1 and info.TransactionUID == request.TransactionUID  # all committed
        assert version.startswith("TLSv1.")
    finally:
        listener.shutdown()


def test_cli_update_turns_tls_off_and_on(peer_box):
    done = cli(peer_box.data_dir, "modality", "update", "PLAINSCP", "--no-tls")
    assert done.returncode == 0 and "Updated PLAINSCP" in done.stdout, done.stderr
    assert echo_in_process(peer_box, "PLAINSCP").ok  # plain storescp answers a plain echo
    done = cli(peer_box.data_dir, "modality", "update", "PLAINSCP", "--tls", "--description", "wrongly TLS")
    assert done.returncode == 0 and "(DICOM TLS)" in done.stdout, done.stderr
    assert not echo_in_process(peer_box, "PLAINSCP").ok
