"""Fixtures for retrieval tests (helpers live in retrieval_support.py)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from retrieval_support import start_box  # noqa: E402


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """One appliance per test module (starting one costs seconds); tests use their own patients."""
    srv = start_box(tmp_path_factory.mktemp("box"))
    yield srv
    srv.kill()


