"""Who may see and export what, and the study list's search rules (Flask test client, real index)."""
import datetime
import io

import pytest

import synth
from helpers import init_data_dir

from appliance.app import build
from appliance.config import load
from appliance.ingest import Origin
from appliance.records import accounts
from web.viewer.search import StudySearch

PASSWORD = "a-long-enough-password"


@pytest.fixture(scope="module")
def app_and_study(tmp_path_factory):
    data = init_data_dir(tmp_path_factory.mktemp("viewer-access") / "data")
    appliance = build(load(data, env={"PACS_STORAGE_RESERVE_MB": "1"}), with_web=False)
    ds = synth.make_instance("CT", patient_name="ACCESS^TEST", patient_id="ACC001")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    appliance.ingestor.store_bytes(buf.getvalue(), Origin("import"))
    for name, role in (("doc", "clinician"), ("tech", "technologist")):
        appliance.index.writer.run(
            lambda n=name, r=role: accounts.create_user(appliance.index.accounts, n, PASSWORD, r))
    from web import create_app

    flask_app = create_app(appliance, {"TESTING": True})
    yield flask_app, ds.StudyInstanceUID
    appliance.index.close()


def login(client, username):
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})


@pytest.mark.parametrize("path", ["/studies", "/patient?id=ACC001", "/studies/{uid}", "/view/{uid}",
                                  "/studies/{uid}/download.zip", "/studies/{uid}/media.zip",
                                  "/viewer/api/studies/{uid}"])
def test_every_viewer_page_needs_a_login(app_and_study, path):
    flask_app, uid = app_and_study
    response = flask_app.test_client().get(path.format(uid=uid))
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_technologist_views_but_cannot_export(app_and_study):
    flask_app, uid = app_and_study
    client = flask_app.test_client()
    login(client, "tech")
    page = client.get(f"/studies/{uid}")
    assert page.status_code == 200 and "ACCESS" in page.text
    assert "Download ZIP" not in page.text
    assert client.get(f"/studies/{uid}/download.zip").status_code == 403


def test_clinician_downloads_and_it_is_audited(app_and_study):
    flask_app, uid = app_and_study
    client = flask_app.test_client()
    login(client, "doc")
    response = client.get(f"/studies/{uid}/download.zip")
    assert response.status_code == 200 and response.data[:2] == b"PK"
    entries = flask_app.extensions["appliance"].audit.query(study_uid=uid, limit=None)
    actions = [(e.actor, e.action) for e in entries]
    assert ("doc", "study.export") in actions


def test_unknown_or_malformed_study_is_404(app_and_study):
    flask_app, _ = app_and_study
    client = flask_app.test_client()
    login(client, "doc")
    assert client.get("/studies/1.2.3.4").status_code == 404
    assert client.get("/studies/not-a-uid").status_code == 404
    assert client.get("/viewer/api/instances/1.2.3/tags").status_code == 404


def test_search_form_to_criteria():
    today = datetime.date(2026, 3, 10)
    s = StudySearch.from_args({"name": "smi jo", "patient_id": "P1", "modality": "us", "dates": "7d"})
    # the name as typed: the engine's fuzzy matching takes its words in any order (index/names.py)
    assert s.criteria(today) == {"PatientName": "smi jo", "PatientID": "P1*", "ModalitiesInStudy": "US",
                                 "StudyDate": "20260304-20260310"}
    assert StudySearch.from_args({"dates": "today"}).criteria(today) == {"StudyDate": "20260310"}
    assert StudySearch.from_args({"from": "2026-01-01"}).criteria(today) == {"StudyDate": "20260101-"}
    assert StudySearch.from_args({"dates": "custom", "from": "garbage"}).criteria(today) == {}
    assert StudySearch.from_args({"page": "-3"}).page == 1
