"""Fixtures: the core parts (keys, archive, index, ingestor) over a temporary directory, no server."""
from __future__ import annotations

import pytest

from core_parts import Core, make_core


@pytest.fixture
def core(tmp_path):
    c = make_core(tmp_path)
    yield c
    c.index.close()


@pytest.fixture
def core_factory(tmp_path):
    made = []

    def factory(**kwargs) -> Core:
        c = make_core(tmp_path / f"core{len(made)}", **kwargs)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.index.close()
