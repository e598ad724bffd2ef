"""The index database: encrypted, WAL, durable commits, migrations recorded, wrong key refused."""
from __future__ import annotations

import os

import pytest

from appliance.errors import KeyStoreError
from appliance.index import Index


@pytest.mark.sqlcipher
def test_durable_wal_and_encrypted(core):
    db = core.index.db
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL: each commit fsyncs the WAL
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    raw = (core.root / "index.db").read_bytes()
    assert not raw.startswith(b"SQLite format 3")
    tables = {r[0] for r in db.execute_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"patient", "study", "series", "instance", "replaced_object", "schema_migration"} <= tables


@pytest.mark.sqlcipher
def test_wrong_key_is_refused(core):
    core.index.close()
    with pytest.raises(KeyStoreError, match="cannot be opened"):
        Index.open(core.root / "index.db", os.urandom(32))


def test_reopening_applies_no_migration_twice(core, index_url):
    core.index.close()
    again = Index.open(core.root / "index.db", core.keys.load().index_key, url=index_url)
    try:
        names = [r[0] for r in again.db.execute_sql("SELECT name FROM schema_migration")]
        assert len(names) == len(set(names)) and names
    finally:
        again.close()
