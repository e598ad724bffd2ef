"""Who may use DICOMweb (roles, HTTP Basic, API tokens, CORS) and that each request is audited once."""
from __future__ import annotations

import csv
import io
import re
import uuid

import requests

import synth
from helpers import ADMIN_PASSWORD, wait_until

DCM = 'multipart/related; type="application/dicom"'


def _stow(auth, dw_url, ds, headers=None):
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue()
            + f"\r\n--{boundary}--\r\n".encode())
    return requests.post(f"{dw_url}/studies", data=body, auth=auth,
                         headers={"Content-Type": f"{DCM}; boundary={boundary}", **(headers or {})})


def test_roles(dw_url):
    ds = synth.make_instance("CT", patient_id="ROLE1")
    # a clinician may search and view, not store
    assert requests.get(f"{dw_url}/studies", auth=("carol", ADMIN_PASSWORD)).status_code == 200
    assert _stow(("carol", ADMIN_PASSWORD), dw_url, ds).status_code == 403
    # a technologist may store
    assert _stow(("tess", ADMIN_PASSWORD), dw_url, ds).status_code == 200


def test_api_token(dw_server, dw_url):
    bearer = {"Authorization": f"Bearer {dw_server.api_token}"}
    assert requests.get(f"{dw_url}/studies", headers=bearer).status_code == 200
    assert requests.get(f"{dw_url}/studies", headers={"Authorization": "Bearer nope"}).status_code == 401


def _audit_rows(server, action: str = "dicomweb") -> list[dict]:
    s = requests.Session()
    page = s.get(f"{server.url}/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    s.post(f"{server.url}/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token})
    text = s.get(f"{server.url}/admin/audit.csv", params={"action": action}).text
    return list(csv.DictReader(io.StringIO(text)))


def test_every_request_is_audited_once(dw_server, dw_url):
    ds = synth.make_instance("MR", patient_id="AUDIT1")
    assert _stow(("tess", ADMIN_PASSWORD), dw_url, ds).status_code == 200
    auth = ("carol", ADMIN_PASSWORD)
    study = f"{dw_url}/studies/{ds.StudyInstanceUID}"
    assert requests.get(study, auth=auth, headers={"Accept": DCM}).status_code == 200
    assert requests.get(f"{study}/metadata", auth=auth).status_code == 200
    assert requests.get(f"{dw_url}/studies", params={"PatientID": "AUDIT1"}, auth=auth).status_code == 200
    frames = f"{study}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"
    for _ in range(3):  # a viewer scrolling: one entry a minute, not one per frame
        assert requests.get(frames, auth=auth).status_code == 200

    def entries():
        rows = [r for r in _audit_rows(dw_server) if r.get("study_uid") == ds.StudyInstanceUID
                or "AUDIT1" in r.get("patient_id", "")]
        return rows if len(rows) >= 3 else None  # store, metadata, frames (the study retrieve is an export)

    rows = wait_until(entries, 15, interval=0.5, what="the audit entries")
    actions = sorted((r["action"], r["actor"]) for r in rows if r["action"].startswith("dicomweb"))
    assert ("dicomweb.store", "tess") in actions
    assert actions.count(("dicomweb.retrieve", "carol")) == 2  # metadata (not per instance) + frames once
    exports = [r for r in _audit_rows(dw_server, "study.export") if r["study_uid"] == ds.StudyInstanceUID]
    assert [r["actor"] for r in exports] == ["carol"]  # the whole study is an export (issue 14)
    assert sum("/frames/" in r["detail"] for r in rows) == 1
    retrieve = [r for r in rows if r["action"] == "dicomweb.retrieve"][0]
    assert retrieve["patient_id"] == "AUDIT1" and retrieve["address"] == "127.0.0.1"
    searches = [r for r in _audit_rows(dw_server) if r["action"] == "dicomweb.search" and r["actor"] == "carol"]
    assert searches


def test_cors_preflight_off_by_default(dw_url):
    r = requests.options(f"{dw_url}/studies", headers={"Origin": "http://viewer.example",
                                                       "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_when_configured(tmp_path):
    from helpers import Server, init_data_dir

    srv = Server(init_data_dir(tmp_path / "cors"), env={"PACS_DICOMWEB_CORS_ORIGINS": "http://viewer.example"}).start()
    try:
        url = f"{srv.url}/dicomweb/studies"
        pre = requests.options(url, headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET",
                                             "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code in (200, 204)
        assert pre.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        r = requests.get(url, auth=("admin", ADMIN_PASSWORD), headers={"Origin": "http://viewer.example"})
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://viewer.example"
        other = requests.get(url, auth=("admin", ADMIN_PASSWORD), headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        srv.kill()
