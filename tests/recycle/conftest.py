"""Fixtures for the recycling tests (helpers live in recyclekit.py, a unique module name)."""
from __future__ import annotations

import pytest
from recyclekit import make_recycle_box


@pytest.fixture
def box(tmp_path):
    b = make_recycle_box(tmp_path, recycle_free_below_mb=3, recycle_target_free_mb=3)
    yield b
    b.app.index.close()
