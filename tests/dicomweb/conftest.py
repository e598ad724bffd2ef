"""One appliance for all DICOMweb tests (each test uses its own patients and UIDs), a client and a session."""
from __future__ import annotations

import subprocess

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from helpers import ADMIN_PASSWORD, CLI, Server, init_data_dir


@pytest.fixture(scope="session")
def dw_server(tmp_path_factory):
    """The box, with a clinician (carol, who also has an API token) and a technologist (tess)."""
    data = init_data_dir(tmp_path_factory.mktemp("dw") / "data")
    pw = data.parent / "data.pw"
    for name, role in (("carol", "clinician"), ("tess", "technologist")):
        subprocess.run(CLI + ["user", "add", name, "--role", role, "--password-file", str(pw), "--data", str(data)],
                       check=True, capture_output=True)
    token = subprocess.run(CLI + ["user", "token", "carol", "--name", "viewer", "--data", str(data)], check=True,
                           capture_output=True, text=True).stdout.strip().split()[-1]
    srv = Server(data).start()
    srv.api_token = token
    yield srv
    srv.kill()


@pytest.fixture(scope="session")
def dw_url(dw_server) -> str:
    return f"{dw_server.url}/dicomweb"


@pytest.fixture(scope="session")
def http(dw_server) -> requests.Session:
    s = requests.Session()
    s.auth = ("admin", ADMIN_PASSWORD)
    return s


@pytest.fixture(scope="session")
def client(dw_url, http) -> DICOMwebClient:
    return DICOMwebClient(url=dw_url, session=http)
