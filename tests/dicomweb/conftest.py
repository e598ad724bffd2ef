"""One appliance per test module (starting one takes a second), with a DICOMweb client and session."""
from __future__ import annotations

import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from helpers import ADMIN_PASSWORD, Server, init_data_dir


@pytest.fixture(scope="module")
def dw_server(tmp_path_factory):
    data = init_data_dir(tmp_path_factory.mktemp("dw") / "data")
    srv = Server(data).start()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def dw_url(dw_server) -> str:
    return f"{dw_server.url}/dicomweb"


@pytest.fixture(scope="module")
def http(dw_server) -> requests.Session:
    s = requests.Session()
    s.auth = ("admin", ADMIN_PASSWORD)
    return s


@pytest.fixture(scope="module")
def client(dw_url, http) -> DICOMwebClient:
    return DICOMwebClient(url=dw_url, session=http)
