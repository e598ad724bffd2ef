import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Server, init_data_dir  # noqa: E402

# PACS_TEST_INDEX=postgresql: the index of every test is a fresh schema on a throwaway PostgreSQL cluster
# (tests/pg_cluster.py), through PACS_INDEX_URL, which servers and CLI commands started by the test inherit.
INDEX_BACKEND = os.environ.get("PACS_TEST_INDEX", "sqlcipher")


def pytest_collection_modifyitems(config, items):
    if INDEX_BACKEND == "postgresql":
        skip = pytest.mark.skip(reason="about the embedded SQLCipher index (PACS_TEST_INDEX=postgresql)")
        for item in items:
            if "sqlcipher" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def pg_cluster():
    if INDEX_BACKEND != "postgresql":
        yield None
        return
    from pg_cluster import Cluster

    root = Path(tempfile.mkdtemp(prefix="pacs-test-pg-"))
    cluster = Cluster(root).start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def index_url(request, monkeypatch) -> str:
    """The PostgreSQL URL of this test's index ('' = the embedded SQLCipher file), also as PACS_INDEX_URL."""
    if INDEX_BACKEND != "postgresql":
        return ""
    url = request.getfixturevalue("pg_cluster").fresh_url()
    monkeypatch.setenv("PACS_INDEX_URL", url)
    return url


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A freshly initialised data directory (admin password: helpers.ADMIN_PASSWORD)."""
    return init_data_dir(tmp_path / "data")


@pytest.fixture
def server(data_dir):
    """A running appliance on free loopback ports, stopped after the test."""
    srv = Server(data_dir).start()
    yield srv
    srv.kill()
