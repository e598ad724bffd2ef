"""Fixtures for the web app: a real Appliance (index, archive, keys) without listeners, and its Flask app."""
import shutil

import pytest
from web_support import USER_PASSWORD, login, make_user

from helpers import init_data_dir

from appliance.app import build
from appliance.config import load


@pytest.fixture(scope="session")
def _template_data_dir(tmp_path_factory):
    return init_data_dir(tmp_path_factory.mktemp("web-template") / "data")


@pytest.fixture
def data_dir(_template_data_dir, tmp_path):
    """A copy of one data directory initialised once per run (``init`` costs seconds).

    On PostgreSQL (PACS_TEST_INDEX=postgresql) a copy would share the template's index: init afresh."""
    if load(_template_data_dir, env={}).index.url:
        return init_data_dir(tmp_path / "data")
    return shutil.copytree(_template_data_dir, tmp_path / "data")


@pytest.fixture
def appliance(data_dir):
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
