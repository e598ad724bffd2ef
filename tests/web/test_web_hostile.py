"""Regressions for the web findings of the hostile review (issue 14: items 3, 6, 10, 12, 13).

Each test failed on the code before the fix; they run through Flask's test client on a real
appliance (index, archive, keys) built on ``tmp_path``.
"""
from __future__ import annotations

import base64
import io
import shutil
import uuid

import pytest
from web_support import USER_PASSWORD, login, make_user

import synth
from helpers import ADMIN_PASSWORD

from appliance.records import accounts

DCM = 'multipart/related; type="application/dicom"'


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def stow(client, ds) -> None:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + buf.getvalue()
            + f"\r\n--{boundary}--\r\n".encode())
    r = client.post("/dicomweb/studies", data=body, headers={"Content-Type": f"{DCM}; boundary={boundary}",
                                                             **basic("admin", ADMIN_PASSWORD)})
    assert r.status_code == 200, r.text


def instance_url(ds) -> str:
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def audit_entries(appliance, **filters):
    appliance.audit.flush()
    return list(appliance.audit.query(**filters, newest_first=False))


# --- item 3: frame lists ----------------------------------------------------------------------

@pytest.fixture
def cine(client):
    ds = synth.make_instance("US_CINE_JPEG", patient_id="CINE3")  # 30 frames
    stow(client, ds)
    return ds


def test_duplicate_frame_numbers_are_refused(client, cine):
    """600 repeats of frame 1 in a 1.4 KB URL produced a 1.26 GB response."""
    r = client.get(f"{instance_url(cine)}/frames/" + ",".join(["1"] * 600), headers=basic("admin", ADMIN_PASSWORD))
    assert r.status_code == 400 and "30" in r.text
    r = client.get(f"{instance_url(cine)}/frames/1,2,1", headers=basic("admin", ADMIN_PASSWORD))
    assert r.status_code == 400 and "more than once" in r.text


def test_frame_list_longer_than_the_instance_is_refused(client, cine):
    frames = ",".join(str(n) for n in range(1, 32))
    r = client.get(f"{instance_url(cine)}/frames/{frames}", headers=basic("admin", ADMIN_PASSWORD))
    assert r.status_code == 400


def test_frames_are_produced_as_the_response_is_read(client, cine, monkeypatch):
    """Every frame was decoded into a list before the first byte was sent; now one at a time."""
    from web.dicomweb import transcoding

    made = []
    real = transcoding.native_frame
    monkeypatch.setattr(transcoding, "native_frame", lambda ds, i: made.append(i) or real(ds, i))
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
    r = client.get(f"{instance_url(cine)}/frames/" + ",".join(str(n) for n in range(1, 31)),
                   headers={"Accept": accept, **basic("admin", ADMIN_PASSWORD)}, buffered=False)
    assert r.status_code == 200 and r.is_streamed
    body = iter(r.response)
    next(body)
    assert len(made) < 30, "all frames were decoded before the response started"
    total = sum(len(chunk) for chunk in body)
    r.close()
    assert len(made) == 30 and total > 0


# --- item 6: whole objects are an export ------------------------------------------------------

@pytest.fixture
def study(client):
    ds = synth.make_instance("CT", patient_id="EXPORT6")
    stow(client, ds)
    return ds


def test_technologist_cannot_export_through_dicomweb(appliance, client, study):
    """The study page's ZIP said 403 to a technologist; WADO-RS and WADO-URI gave the whole study."""
    make_user(appliance, "tess", "technologist")
    tess = basic("tess", USER_PASSWORD)
    whole = {"Accept": DCM, **tess}
    for path in (f"/dicomweb/studies/{study.StudyInstanceUID}",
                 f"/dicomweb/studies/{study.StudyInstanceUID}/series/{study.SeriesInstanceUID}",
                 instance_url(study)):
        assert client.get(path, headers=whole).status_code == 403, path
    wado = client.get("/dicomweb/wado", headers=tess, query_string={
        "requestType": "WADO", "studyUID": study.StudyInstanceUID, "seriesUID": study.SeriesInstanceUID,
        "objectUID": study.SOPInstanceUID, "contentType": "application/dicom"})
    assert wado.status_code == 403
    # viewing stays open
    assert client.get(f"{instance_url(study)}/metadata", headers=tess).status_code == 200
    assert client.get(f"{instance_url(study)}/frames/1", headers=tess).status_code == 200
    assert client.get(f"{instance_url(study)}/rendered", headers=tess).status_code == 200
    assert client.get(f"{instance_url(study)}/thumbnail", headers=tess).status_code == 200
    denied = audit_entries(appliance, actor="tess", action="access.denied")
    assert len(denied) == 4 and all(e.address == "127.0.0.1" and "/dicomweb/" in e.detail for e in denied)


def test_clinician_export_through_dicomweb_is_audited_as_an_export(appliance, client, study):
    make_user(appliance, "carol", "clinician")
    r = client.get(f"/dicomweb/studies/{study.StudyInstanceUID}", headers={"Accept": DCM,
                                                                           **basic("carol", USER_PASSWORD)})
    assert r.status_code == 200 and len(r.data) > 1000
    exports = audit_entries(appliance, actor="carol", action="study.export")
    assert len(exports) == 1 and exports[0].patient_id == "EXPORT6" and "dicomweb" in exports[0].detail


def test_refused_page_is_audited(appliance, flask_app, study):
    make_user(appliance, "tess2", "technologist")
    c = flask_app.test_client()
    assert login(c, "tess2", USER_PASSWORD).status_code == 302
    assert c.get(f"/studies/{study.StudyInstanceUID}/download.zip").status_code == 403
    denied = audit_entries(appliance, actor="tess2", action="access.denied")
    assert len(denied) == 1 and "download.zip" in denied[0].detail


# --- item 10: lockout as a weapon ---------------------------------------------------------------

def _client_at(flask_app, address: str):
    c = flask_app.test_client()
    c.environ_base["REMOTE_ADDR"] = address
    return c


def test_failures_from_elsewhere_do_not_lock_a_user_out_of_their_workstation(appliance, flask_app):
    """Five wrong passwords from five addresses locked the user out everywhere for 15 minutes."""
    make_user(appliance, "victim", "clinician")
    workstation, dicomweb_client = _client_at(flask_app, "10.0.0.9"), _client_at(flask_app, "10.0.0.20")
    assert login(workstation, "victim", USER_PASSWORD).status_code == 302
    assert dicomweb_client.get("/dicomweb/studies", headers=basic("victim", USER_PASSWORD)).status_code in (200, 204)
    for n in range(5):
        assert login(_client_at(flask_app, f"192.0.2.{n}"), "victim", "wrong-password").status_code == 401
    later = _client_at(flask_app, "10.0.0.9")
    assert login(later, "victim", USER_PASSWORD).status_code == 302
    fresh_basic = _client_at(flask_app, "10.0.0.20")
    flask_app.extensions["pacs_web"].basic_cache._entries.clear()  # a real password check, not the cache
    assert fresh_basic.get("/dicomweb/studies", headers=basic("victim", USER_PASSWORD)).status_code in (200, 204)


def test_brute_force_from_one_address_is_still_locked(appliance, flask_app):
    make_user(appliance, "victim2", "clinician")
    attacker = _client_at(flask_app, "192.0.2.50")
    for _ in range(5):
        assert login(attacker, "victim2", "wrong-password").status_code == 401
    assert login(attacker, "victim2", USER_PASSWORD).status_code == 429  # even the right one, from there


# --- item 12: API tokens show when they were last used ------------------------------------------

def test_token_last_use_is_recorded_and_shown(appliance, admin_client):
    import re

    from web_support import page_csrf

    make_user(appliance, "script", "clinician")
    r = admin_client.post("/admin/users/script/tokens", data={"csrf_token": page_csrf(admin_client, "/admin/users"),
                                                              "name": "nightly"})
    token = re.search(r'id="new-token">([^<]+)<', r.text).group(1)
    assert "never used" in admin_client.get("/admin/users").text
    from indexkit import rows

    assert rows(appliance.index, "ApiToken", prefix=token[:12])[0].last_used_at is None
    tool = admin_client.application.test_client()
    assert tool.get("/dicomweb/studies", headers={"Authorization": f"Bearer {token}"}).status_code in (200, 204)
    assert rows(appliance.index, "ApiToken", prefix=token[:12])[0].last_used_at is not None
    assert "last used" in admin_client.get("/admin/users").text
    assert accounts.user_for_token(appliance.index.accounts, token).username == "script"


# --- item 13: /healthz warns before the disk reaches the reserve --------------------------------

def test_healthz_warns_well_before_the_reserve(data_dir):
    """/healthz said disk 'ok' with 8 KiB left above the reserve (here 256 MiB: others share this disk)."""
    from appliance.app import build
    from appliance.config import load
    from web import create_app

    free_mb = shutil.disk_usage(data_dir).free >> 20
    appliance = build(load(data_dir, env={"PACS_STORAGE_RESERVE_MB": str(free_mb - 256)}), with_web=False)
    try:
        r = create_app(appliance, {"TESTING": True}).test_client().get("/healthz")
        body = r.get_json()
        assert body["checks"]["disk"].get("warn") is True, body["checks"]["disk"]
        assert body["checks"]["disk"]["ok"] and "reserve" in body["checks"]["disk"]["detail"]
        assert body["status"] != "ok"  # "failing" here only because no DICOM listener runs in this test
    finally:
        appliance.index.close()
