"""A consistent copy of the live index, taken with SQLite's online backup API.

The copy is a SQLCipher database keyed with the same index key, so it is
encrypted on the local disk too; backup/sync.py seals it once more (AES-256-GCM,
manifest.seal_blob) before it leaves the box, which authenticates the whole
file and binds it to its offsite name.

The backup runs in one step (all pages under one read transaction), so the
copy is one committed state of the index even while ingest keeps writing.

It lives in the index package because it reads the copy's tables (what a
complete restore needs); the backup only asks.
"""
from __future__ import annotations

import os
from pathlib import Path

from sqlcipher3 import dbapi2 as sqlcipher

from ..errors import ConfigError


def _connect(path: Path, key: bytes):
    conn = sqlcipher.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    return conn


def take(index_db, index_key: bytes, dest: Path) -> Path:
    """Copy the live index (a peewee database) into ``dest``, encrypted with the index key."""
    from .postgres import PostgresIndexDatabase

    if isinstance(index_db, PostgresIndexDatabase):
        # Issue 19 item 3: a PostgreSQL index needs its own consistent copy (pg_dump-like); not written yet.
        raise ConfigError(f"the index at {index_db.describe()} is a PostgreSQL database: backing it up with the "
                          "box's backup is not supported yet; back the database up on its server")
    dest.unlink(missing_ok=True)
    target = _connect(dest, index_key)
    try:
        # A dedicated source connection: the calling thread's peewee connection may be mid-transaction.
        source = _connect(Path(index_db.database), index_key)
        try:
            source.backup(target)
        finally:
            source.close()
        target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
    finally:
        target.close()
    os.chmod(dest, 0o600)
    return dest


def object_ids(path: Path, index_key: bytes) -> list[str]:
    """Every archive object the snapshot's index refers to (what a complete restore needs).

    Objects of recycled studies (appliance/services/recycle.py) are included: their only copy is offsite, so
    they must stay listed, or retention would delete them there.
    """
    conn = _connect(path, index_key)
    try:
        binned = ("UNION SELECT object_id FROM binned_object WHERE purged_at IS NULL "  # the recycle bin (0012)
                  if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'binned_object'").fetchone() else "")
        rows = conn.execute("SELECT object_id FROM instance UNION SELECT object_id FROM replaced_object "
                            "UNION SELECT object_id FROM recycled_object " + binned).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def recycled_sizes(path: Path, index_key: bytes) -> dict[str, int]:
    """object id -> offsite size, for the objects of recycled studies (no longer on the box's disk)."""
    conn = _connect(path, index_key)
    try:
        return dict(conn.execute("SELECT object_id, offsite_size FROM recycled_object").fetchall())
    finally:
        conn.close()
