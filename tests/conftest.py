import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pg_cluster as pg_cluster_mod  # noqa: E402
from helpers import Server, init_data_dir  # noqa: E402

# PACS_TEST_INDEX=postgresql: every test's index is a fresh schema on a throwaway PostgreSQL cluster
# (tests/pg_cluster.py): data directories made by init_data_dir name theirs in their appliance.toml, so
# servers, CLI commands and readbacks all use it; tests opening an index directly take ``index_url``.
INDEX_BACKEND = os.environ.get("PACS_TEST_INDEX", "sqlcipher")


def pytest_collection_modifyitems(config, items):
    if INDEX_BACKEND == "postgresql":
        skip = pytest.mark.skip(reason="about the embedded SQLCipher index (PACS_TEST_INDEX=postgresql)")
        for item in items:
            if "sqlcipher" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def pg_cluster():
    """The session's PostgreSQL cluster (None on the embedded index); first, so any fixture can use it."""
    if INDEX_BACKEND != "postgresql":
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="pacs-test-pg-"))
    cluster = pg_cluster_mod.Cluster(root).start()
    pg_cluster_mod.ACTIVE = cluster
    try:
        yield cluster
    finally:
        pg_cluster_mod.ACTIVE = None
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def index_url(pg_cluster) -> str:
    """A new PostgreSQL index URL for this test ('' = use the embedded SQLCipher file)."""
    return pg_cluster.fresh_url() if pg_cluster else ""


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
