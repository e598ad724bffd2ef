"""Issue 14 item 5: replacing an instance under an existing SOP Instance UID is safe and visible.

- a byte-identical resend stays a quiet success (no audit entry, no version);
- a replacement (here: the same image re-sent by another tool in another encoding) is stored,
  audited with who, the instance and the old and new patient/study, and the old version is listed
  and restorable by `pacs-appliance storage versions`;
- a replacement that names another patient is refused by default (DICOM 0xC771, HTTP 409 for STOW)
  with a reason, or with [storage] on_patient_change = "hold" kept aside for an admin to accept;
- the admin page shows held objects, replaced versions and the audit trail, and restores.
Real peers: a `pacs-appliance serve` process, dcmtk storescu, HTTP STOW-RS and the CLI.
"""
from __future__ import annotations

import hashlib
import io
import json
import re

import requests

import synth
from helpers import ADMIN_PASSWORD, Server, dcmtk, run_cli


def _audit(data_dir, action):
    from appliance.archive import KeyStore
    from appliance.config import load
    from appliance.index import Index
    from appliance.records.audit import AuditLog

    cfg = load(data_dir, env={})
    index = Index.open(cfg.index_path, KeyStore(cfg.keys_dir).load().index_key)
    try:
        return [(e.action, e.actor, e.patient_id, e.detail)
                for e in AuditLog(index).query(action=action, newest_first=False, limit=None)]
    finally:
        index.close()


def _current(srv, sop_uid):
    r = requests.get(f"{srv.url}/dicomweb/instances", params={"SOPInstanceUID": sop_uid, "includefield": "00100020"},
                     auth=("admin", ADMIN_PASSWORD), headers={"Accept": "application/dicom+json"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()[0]["00100020"]["Value"][0]


def _versions(data_dir, *args):
    return json.loads(run_cli("storage", "versions", "--json", "--data", data_dir, *args).stdout)


def _part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _stow(srv, body: bytes):
    boundary = "b0undary"
    payload = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body
               + f"\r\n--{boundary}--\r\n".encode())
    return requests.post(f"{srv.url}/dicomweb/studies", data=payload, auth=("admin", ADMIN_PASSWORD), timeout=30,
                         headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                                  "Accept": "application/dicom+json"})


def test_resend_replace_refuse_hold_restore(data_dir, tmp_path):
    ds = synth.make_instance("CT", patient_name="FIRST^PATIENT", patient_id="PAT-A")
    original = tmp_path / "original.dcm"
    ds.save_as(original, enforce_file_format=True)
    uid = ds.SOPInstanceUID
    other = synth.make_instance("CT", patient_name="OTHER^PATIENT", patient_id="PAT-B")
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = uid
    other_path = tmp_path / "other.dcm"
    other.save_as(other_path, enforce_file_format=True)

    srv = Server(data_dir).start()
    try:
        port = srv.dicom_port
        assert dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", port, original).returncode == 0
        again = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", port, original)  # identical: quiet success
        assert again.returncode == 0 and "Failure" not in again.stderr
        assert _versions(data_dir) == []

        # Another tool re-sends it in implicit VR: different bytes, same patient: a visible replacement.
        resent = dcmtk("storescu", "-xi", "-aet", "SECONDTOOL", "-aec", "PACSBOX", "127.0.0.1", port, original)
        assert resent.returncode == 0, resent.stderr
        [old] = _versions(data_dir)
        assert old["sop_uid"] == uid and old["patient_id"] == "PAT-A" and not old["held"]
        assert old["current_patient_id"] == "PAT-A"
        [(action, actor, pid, detail)] = _audit(data_dir, "instance.replace")
        assert actor.startswith("dicom:SECONDTOOL@") and pid == "PAT-A"
        assert f"SOP Instance UID {uid}: patient PAT-A -> PAT-A, study {ds.StudyInstanceUID} -> " in detail
        assert f"instance {uid}: a different object from dicom:SECONDTOOL@" in srv.log()

        # Another patient under the same UID: refused with a failure status and a reason; nothing changes.
        refused = dcmtk("storescu", "-d", "-aec", "PACSBOX", "127.0.0.1", port, other_path)
        assert "0xc771: Error: Cannot understand" in refused.stderr, refused.stderr
        assert "refused: this SOP Instance UID is stored for another patient" in refused.stderr  # Error Comment
        stow = _stow(srv, other_path.read_bytes())
        assert stow.status_code == 409
        assert stow.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC771]
        assert "stored for another patient" in stow.headers.get("Warning", "")
        assert _current(srv, uid) == "PAT-A" and len(_versions(data_dir)) == 1
        refusals = _audit(data_dir, "instance.replace.refused")
        assert len(refusals) == 2 and all("patient PAT-A -> PAT-B" in d for _a, _b, _c, d in refusals)
        assert "PAT-B" not in srv.log() and "OTHER^PATIENT" not in srv.log()  # logs carry UIDs only
    finally:
        srv.stop()

    srv = Server(data_dir, env={"PACS_STORAGE_ON_PATIENT_CHANGE": "hold"}).start()
    try:
        held = dcmtk("storescu", "-aec", "PACSBOX", "127.0.0.1", srv.dicom_port, other_path)
        assert held.returncode == 0, held.stderr  # safely on disk, so acknowledged
        assert _current(srv, uid) == "PAT-A"  # ... but not current until an admin accepts it
        [waiting] = _versions(data_dir, "--held")
        assert waiting["held"] and waiting["patient_id"] == "PAT-B" and waiting["current_patient_id"] == "PAT-A"
        assert _audit(data_dir, "instance.replace.held")

        # The admin accepts it: the held object becomes current, the current one a version.
        out = run_cli("storage", "versions", "--restore", waiting["object_id"], "--data", data_dir).stdout
        assert "is current again" in out
        assert _current(srv, uid) == "PAT-B"
        # ... and changes their mind: the very first version comes back, byte for byte.
        first = next(v for v in _versions(data_dir, uid) if v["object_id"] == old["object_id"])
        run_cli("storage", "versions", "--restore", first["object_id"], "--data", data_dir)
        assert _current(srv, uid) == "PAT-A"
        r = requests.get(f"{srv.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                         f"/instances/{uid}", auth=("admin", ADMIN_PASSWORD), timeout=30,
                         headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert r.status_code == 200
        body = r.content.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
        assert hashlib.sha256(body).hexdigest() == old["sha256"]  # the first version, byte for byte
        assert len(_versions(data_dir)) == 2 and len(_audit(data_dir, "instance.version.restore")) == 2
    finally:
        srv.stop()


def test_admin_page_shows_and_resolves_replacements(data_dir):
    from appliance.app import build
    from appliance.config import load
    from appliance.errors import ReplacementRefused
    from appliance.ingest import Origin
    from web import create_app

    app = build(load(data_dir, env={"PACS_STORAGE_RESERVE_MB": "1", "PACS_STORAGE_ON_PATIENT_CHANGE": "hold"}),
                with_web=False)
    try:
        ds = synth.make_instance("CT", patient_id="PAT-A")
        app.ingestor.store_bytes(_part10(ds), Origin("dicom", "CT1@10.0.0.5"))
        ds.StudyDescription = "corrected"
        app.ingestor.store_bytes(_part10(ds), Origin("stow", "alice"))  # same patient: replaced
        ds.PatientID = "PAT-B"
        held = app.ingestor.store_bytes(_part10(ds), Origin("import", "inbox"))
        assert held.outcome.value == "held"
        app.ingestor.on_patient_change = "reject"
        ds.PatientID = "PAT-C"
        try:
            app.ingestor.store_bytes(_part10(ds), Origin("dicom", "CT2@10.0.0.6"))
            raise AssertionError("a replacement naming another patient was accepted")
        except ReplacementRefused as exc:
            assert exc.dimse_status == 0xC771 and "PAT-C" not in str(exc)
        app.audit.flush()

        client = create_app(app, {"TESTING": True}).test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
        page = client.get("/admin/replacements").text
        assert "Held for you (1)" in page and "PAT-B" in page and "other patient" in page
        assert "stow:alice" in page and "dicom:CT2@10.0.0.6" in page and "refused" in page
        [waiting] = app.versions.list(held=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        r = client.post(f"/admin/replacements/{waiting.object_id}/discard", data={"csrf_token": token},
                        follow_redirects=True)
        assert "the held object was discarded" in r.text and "Nothing held." in r.text
        assert not app.archive.exists(waiting.object_id)
        [replaced] = app.versions.list(held=False)
        r = client.post(f"/admin/replacements/{replaced.object_id}/restore", data={"csrf_token": token},
                        follow_redirects=True)
        assert "that version is now current" in r.text
        app.audit.flush()
        assert [e.actor for e in app.audit.query(action="instance.version", limit=None)] == ["admin", "admin"]
    finally:
        app.index.close()
