"""Fixtures for the DICOM TLS tests: throwaway certificates and appliances with a TLS listener."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tls_certs import Authority  # noqa: E402
from tls_support import Pki, start_tls_box  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    """The clinic's CA with a server and a client certificate, and a stranger's CA with a client certificate."""
    root = tmp_path_factory.mktemp("pki")
    clinic = Authority(root / "clinic", "Test Clinic CA")
    stranger = Authority(root / "stranger", "Stranger CA")
    return Pki(ca=clinic.pem.cert, server=clinic.issue("server", "pacsbox", server=True),
               client=clinic.issue("client", "US_ROOM1", server=False),
               stranger_ca=stranger.pem.cert, stranger_client=stranger.issue("client", "INTRUDER", server=False),
               stranger_server=stranger.issue("server", "IMPOSTOR", server=True))


@pytest.fixture(scope="module")
def tls_box(tmp_path_factory, pki):
    """An appliance with both listeners; client certificates checked against the clinic CA when sent.

    At most 2 associations at once (shared by both listeners): the tests open one at a time, except
    the one that checks the shared budget."""
    srv = start_tls_box(tmp_path_factory.mktemp("tlsbox"), pki, env={"PACS_DICOM_MAX_ASSOCIATIONS": "2"})
    yield srv
    srv.kill()
