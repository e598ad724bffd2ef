"""A consistent copy of the live index, taken with SQLite's online backup API.

The copy is a SQLCipher database keyed with the same index key, so it is
encrypted on the local disk too; backup/sync.py seals it once more (AES-256-GCM,
manifest.seal_blob) before it leaves the box, which authenticates the whole
file and binds it to its offsite name.

The backup runs in one step (all pages under one read transaction), so the
copy is one committed state of the index even while ingest keeps writing.

A PostgreSQL index is copied the same way in spirit: read in one consistent transaction and
written row by row into a new SQLCipher file (transfer.py), so the offsite snapshot has one
format for both backends and a restore can put it into either.

It lives in the index package because it reads the copy's tables (what a
complete restore needs); the backup only asks.
"""
from __future__ import annotations

import heapq
import os
from operator import itemgetter
from pathlib import Path
from typing import Iterator

from sqlcipher3 import dbapi2 as sqlcipher


def _connect(path: Path, key: bytes):
    conn = sqlcipher.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    return conn


def take(index_db, index_key: bytes, dest: Path) -> Path:
    """Copy the live index (a peewee database) into ``dest``, encrypted with the index key."""
    from .postgres import PostgresIndexDatabase

    if isinstance(index_db, PostgresIndexDatabase):
        return _take_logical(index_db, index_key, dest)
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


def _take_logical(index_db, index_key: bytes, dest: Path) -> Path:
    """A PostgreSQL index, copied row by row (transfer.py: one consistent read) into a new SQLCipher
    file: the snapshot has the same format whichever backend the box uses, so one restore reads both."""
    from .db import open_index
    from .transfer import copy

    files = (dest, Path(f"{dest}-wal"), Path(f"{dest}-shm"))
    for p in files:
        p.unlink(missing_ok=True)
    try:
        snap = open_index(dest, index_key)  # an empty index, its schema made by the same migrations
        try:
            copy(index_db, snap)
        finally:
            snap.close()
    except BaseException:
        for p in files:  # no half copy left in the work folder
            p.unlink(missing_ok=True)
        raise
    conn = _connect(dest, index_key)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
    finally:
        conn.close()
    os.chmod(dest, 0o600)
    return dest


def object_ids(path: Path, index_key: bytes) -> list[str]:
    """Every archive object the snapshot's index refers to (what a complete restore needs), in order."""
    return [oid for oid, _size in wanted(path, index_key)]


def wanted(path: Path, index_key: bytes) -> Iterator[tuple[str, int | None]]:
    """(object id, offsite size if recycled else None) for every archive object the snapshot's index refers to,
    in object-id order and read as it is consumed (a million rows are never held).

    Objects of recycled studies (appliance/services/recycle.py) are included, with the size of their offsite copy
    (they are no longer on the box's disk): their only copy is offsite, so they must stay listed, or retention
    would delete them there.

    Each table is read in the order of its unique object_id index and the streams are merged here: one ORDER BY
    over their union would sort every id in memory first (SQLCipher keeps temporary b-trees in memory).
    """
    conn = _connect(path, index_key)
    try:
        binned = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'binned_object'").fetchone()  # (0012)
        queries = ["SELECT object_id, NULL FROM instance ORDER BY object_id",
                   "SELECT object_id, NULL FROM replaced_object ORDER BY object_id",
                   "SELECT object_id, offsite_size FROM recycled_object ORDER BY object_id"]
        if binned:  # the recycle bin
            queries.append("SELECT object_id, NULL FROM binned_object WHERE purged_at IS NULL ORDER BY object_id")
        # Keyed on the id alone; an id named twice (an instance and its recycled copy) comes once, with any
        # offsite size.
        last: tuple[str, int | None] | None = None
        for item in heapq.merge(*(conn.execute(q) for q in queries), key=itemgetter(0)):
            if last is not None and item[0] == last[0]:
                last = (last[0], last[1] if last[1] is not None else item[1])
                continue
            if last is not None:
                yield last
            last = item
        if last is not None:
            yield last
    finally:
        conn.close()
