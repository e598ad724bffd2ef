"""Fixtures for the backup tests (helpers in backupkit.py: a unique module name, unlike conftest)."""
from __future__ import annotations

import pytest
from backupkit import make_box


@pytest.fixture
def folder_box(tmp_path):
    nas = tmp_path / "nas"
    nas.mkdir()
    box = make_box(tmp_path, f"file://{nas}")
    box.nas = nas
    yield box
    box.app.index.close()
