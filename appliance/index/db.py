"""Opening the index, plus migrations: SQLCipher (encrypted SQLite) in WAL mode by default, or a
PostgreSQL server when ``[index] url`` names one (postgres.py). The backend is chosen here and
nowhere else.

The whole database file, its WAL and its temporary files are encrypted with a
raw 256-bit key from the key store (no passphrase KDF: the key is already
random, and a KDF would cost every new connection ~100 ms). Reads use one
connection per thread; all writes go through the single writer (writer.py).

``synchronous=FULL`` makes each commit fsync the WAL: a committed ingest
survives a power cut, which ``NORMAL`` in WAL mode would not promise.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from peewee import DatabaseError
from playhouse.migrations import Runner
from playhouse.sqlcipher_ext import SqlCipherDatabase

from ..archive.fsutil import PRIVATE_FILE, make_private
from ..errors import KeyStoreError
from .models import all_models

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class IndexDatabase(SqlCipherDatabase):
    """SqlCipherDatabase keyed with a raw key instead of a passphrase."""

    write_lock: tuple = ("IMMEDIATE",)  # the writer takes the write lock up front: no upgrade deadlocks

    def __init__(self, path: Path, key: bytes, cache_mb: int = 64):
        self._raw_key = key.hex()
        super().__init__(
            str(path),
            pragmas={
                "journal_mode": "wal",
                "synchronous": "full",
                "foreign_keys": 1,
                "busy_timeout": 30000,
                "cache_size": -1024 * cache_mb,
                # Process-wide: every thread reads through its own connection (20+ under load), and each
                # cache would otherwise grow to cache_mb as the index grows (measured: bench/README.md).
                "soft_heap_limit": 2 * cache_mb << 20,
                "temp_store": "memory",
            },
            check_same_thread=False,
        )

    def _connect(self):
        from sqlcipher3 import dbapi2 as sqlcipher

        conn = sqlcipher.connect(self.database, isolation_level=None, **self.connect_params)
        try:
            conn.execute(f"PRAGMA key = \"x'{self._raw_key}'\"")
            self._add_conn_hooks(conn)
        except DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc):
                raise KeyStoreError(
                    f"{self.database} cannot be opened with this box's index key "
                    "(wrong keyring for this data directory, or the file is damaged)"
                ) from None
            raise
        except Exception:
            conn.close()
            raise
        return conn


    def probe(self) -> None:
        """Read the schema catalogue: raises when the file cannot be read (or decrypted) now."""
        self.execute_sql("SELECT count(*) FROM sqlite_master").fetchone()

    def describe(self) -> str:
        return str(self.database)


def probe(db) -> None:
    """Raises when the index cannot be read now (either backend)."""
    db.probe()


def _private_files(path: Path) -> None:
    """Create the index file 0600 before SQLite does (it would follow the umask), and tighten one made
    looser by an older version. SQLite gives its -wal and -shm files the main file's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
    for p in (Path(path), Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            make_private(p)


def open_index(path: Path, key: bytes, cache_mb: int = 64, url: str = "", allow_insecure: bool = False):
    """Open (creating if needed) the index and bring its schema up to date.

    With ``url`` (``postgresql://user:pass@host:port/db``) the index is that PostgreSQL database
    (``path``, ``key`` and ``cache_mb`` are then unused: the server encrypts, or not, on its own terms).
    """
    if url:
        from .postgres import PostgresIndexDatabase

        db = PostgresIndexDatabase(url, allow_insecure)
        db.bind(all_models())  # TRANSITIONAL, as below
        return _migrate(db)
    _private_files(path)
    db = IndexDatabase(path, key, cache_mb)
    # TRANSITIONAL: the models are meant to stay unbound (repositories execute against their own db, see
    # repository.py). This global bind only keeps the modules not yet moved into repositories working;
    # it goes when the last one has moved, and nothing in appliance/index relies on it.
    db.bind(all_models())
    try:
        db.connect(reuse_if_open=True)
        db.probe()
    except DatabaseError as exc:
        if "not a database" in str(exc):
            raise KeyStoreError(
                f"{path} cannot be opened with this box's index key "
                "(wrong keyring for this data directory, or the file is damaged)"
            ) from None
        raise
    return _migrate(db)


def _migrate(db):
    db.connect(reuse_if_open=True)
    db.probe()
    applied = Runner(db, directory=str(MIGRATIONS_DIR)).up()
    for name in applied:
        log.info("index schema: applied migration %s", name)
    return db
