"""Fixtures for the web app: a real Appliance (index, archive, keys) without listeners, and its Flask app."""
import re
import shutil

import pytest

from helpers import ADMIN_PASSWORD, init_data_dir

from appliance import accounts
from appliance.app import build
from appliance.config import load

USER_PASSWORD = "a-long-enough-password"


@pytest.fixture(scope="session")
def _template_data_dir(tmp_path_factory):
    return init_data_dir(tmp_path_factory.mktemp("web-template") / "data")


@pytest.fixture
def data_dir(_template_data_dir, tmp_path):
    """A copy of one data directory initialised once per run (``init`` costs seconds)."""
    return shutil.copytree(_template_data_dir, tmp_path / "data")


@pytest.fixture
def appliance(data_dir, monkeypatch):
    for key in ("PACS_HTTP_LOGIN_MAX_FAILURES", "PACS_HTTP_METRICS_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    app = build(load(data_dir, env={}), with_web=False)
    yield app
    app.index.close()


@pytest.fixture
def flask_app(appliance):
    from web import create_app

    return create_app(appliance, {"TESTING": True})


@pytest.fixture
def client(flask_app):
    return flask_app.test_client()


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client, username="admin", password=ADMIN_PASSWORD):
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def make_user(appliance, username, role, password=USER_PASSWORD):
    return appliance.index.writer.run(lambda: accounts.create_user(username, password, role))


@pytest.fixture
def admin_client(client):
    assert login(client).status_code == 302
    return client


@pytest.fixture
def clinician_client(appliance, flask_app):
    make_user(appliance, "drwho", "clinician")
    c = flask_app.test_client()
    assert login(c, "drwho", USER_PASSWORD).status_code == 302
    return c


def page_csrf(client, path="/"):
    return csrf_from(client.get(path).text)
