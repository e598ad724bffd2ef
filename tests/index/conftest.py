"""Fixtures: the core parts (keys, archive, index, ingestor) over a temporary directory, no server."""
from __future__ import annotations

import pytest

from core_parts import Core, make_core


@pytest.fixture
def core(tmp_path, index_url):
    c = make_core(tmp_path, url=index_url)
    yield c
    c.index.close()


@pytest.fixture
def core_factory(tmp_path, request):
    made = []

    def factory(**kwargs) -> Core:
        # Each core its own index: on PostgreSQL a schema of its own (the autouse index_url is the first's).
        url = request.getfixturevalue("pg_cluster").fresh_url() if request.getfixturevalue("index_url") else ""
        c = make_core(tmp_path / f"core{len(made)}", url=url, **kwargs)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.index.close()
