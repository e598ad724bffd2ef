import pytest

from importkit import start_server


@pytest.fixture
def inbox_server(data_dir):
    """A running appliance whose inbox takes files after 0.4 s of stability."""
    srv = start_server(data_dir)
    yield srv
    srv.kill()
