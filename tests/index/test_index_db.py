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



def test_an_index_is_copied_before_it_is_migrated_and_a_newer_schema_still_opens(core, tmp_path, monkeypatch, caplog):
    """Migrations only go forward: before applying new ones to an existing index, a copy is kept,
    so a box whose update falls back to the previous version has an index that version knows."""
    import shutil

    from appliance.index import db as index_db

    key = core.keys.load().index_key
    migrations = sorted(p.stem for p in index_db.MIGRATIONS_DIR.glob("0*.py"))
    newest = migrations[-1]
    older = tmp_path / "older-migrations"  # the previous version: without the newest migration
    older.mkdir()
    for name in migrations[:-1]:
        shutil.copy(index_db.MIGRATIONS_DIR / f"{name}.py", older / f"{name}.py")
    box = tmp_path / "box"
    box.mkdir()
    path = box / "index.db"

    monkeypatch.setattr(index_db, "MIGRATIONS_DIR", older)
    Index.open(path, key).close()  # made by the previous version
    assert not list(box.glob("index.db.pre-*"))  # a new index: nothing to keep
    monkeypatch.undo()

    Index.open(path, key).close()  # the update migrates it, after keeping a copy
    copy = box / f"index.db.pre-{newest}"
    assert copy.exists()
    copied = index_db.IndexDatabase(copy, key)
    assert {r[0] for r in copied.execute_sql("SELECT name FROM schema_migration")} == set(migrations[:-1])
    copied.close()
    Index.open(path, key).close()  # nothing pending: no new copy
    assert len(list(box.glob("index.db.pre-*"))) == 1

    # The previous version meets the newer schema after a fallback: it opens and says so.
    monkeypatch.setattr(index_db, "MIGRATIONS_DIR", older)
    with caplog.at_level("WARNING"):
        Index.open(path, key).close()
    assert f"index schema is newer than this version (migrations {newest} unknown here)" in caplog.text
