import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Server, init_data_dir  # noqa: E402


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
