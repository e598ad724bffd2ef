"""Opening the index, plus migrations: SQLCipher (encrypted SQLite) in WAL mode by default, or a
PostgreSQL server when ``[index] url`` names one (postgres.py). The backend is chosen here and
nowhere else.

The whole database file, its WAL and its temporary files are encrypted with a
raw 256-bit key from the key store (no passphrase KDF: the key is already
random, and a KDF would cost every new connection ~100 ms). Reads use one
connection per thread (kept for the next thread when one ends: connections.py); all
writes go through the single writer (writer.py), on its own connection (connections.py:
opened without SQLite's same-thread check, as a submitting thread may borrow it, and as
an ended thread's connection serves another).

``synchronous=FULL`` makes each commit fsync the WAL: a committed ingest
survives a power cut, which ``NORMAL`` in WAL mode would not promise.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from peewee import DatabaseError
from playhouse.migrations import Runner
from playhouse.sqlcipher_ext import SqlCipherDatabase

from ..archive.fsutil import PRIVATE_FILE, atomic_output, make_private
from ..errors import KeyStoreError
from .connections import IdleConnections, ThreadConnections

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _idle_outside_transaction(conn) -> bool:
    return not conn.in_transaction  # raises on a closed connection: then it is not kept


class IndexDatabase(SqlCipherDatabase):
    """SqlCipherDatabase keyed with a raw key instead of a passphrase."""

    write_lock: tuple = ("IMMEDIATE",)  # the writer takes the write lock up front: no upgrade deadlocks
    # What to do when the index lacks rows the archive has (reconcile.TooManyOrphans).
    remedy = ("Stop the service and run `pacs-appliance index rebuild` (it rebuilds the index from the archive "
              "and its latest index snapshot)")

    def __init__(self, path: Path, key: bytes, cache_mb: int = 32):
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
                # cache would otherwise grow to cache_mb as the index grows (measured: bench/README.md);
                # all of them together stay near one cache's worth (a 1M-instance box: bench/README.md).
                "soft_heap_limit": cache_mb << 20,
                "temp_store": "memory",
            },
            check_same_thread=False,
        )
        # per thread, plus the writer's that a submitter may borrow; an ended thread's is kept for the next
        self._state = ThreadConnections(IdleConnections(_idle_outside_transaction))

    def _connect(self):
        from sqlcipher3 import dbapi2 as sqlcipher

        conn = self._state.idle.take()  # keyed, pragmas set, schema read: as it was left
        if conn is not None:
            return conn
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

    def batches(self, sql: str, params=(), size: int = 256) -> Iterator[list[tuple]]:
        """The rows of ``sql``, ``size`` at a time, as SQLite reads them (postgres.py has the same)."""
        cursor = self.execute_sql(sql, params)
        try:
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            cursor.close()

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


def open_index(path: Path, key: bytes, cache_mb: int = 32, url: str = "", allow_insecure: bool = False,
               before_migrations: Callable[[IndexDatabase], None] | None = None):
    """Open (creating if needed) the index and bring its schema up to date; ``before_migrations`` is
    called with the database when an existing SQLite index is about to be migrated (to snapshot it first).

    With ``url`` (``postgresql://user:pass@host:port/db``) the index is that PostgreSQL database
    (``path``, ``key`` and ``cache_mb`` are then unused: the server encrypts, or not, on its own terms).
    """
    if url:
        from .postgres import PostgresIndexDatabase

        return _migrate(PostgresIndexDatabase(url, allow_insecure), None)
    _private_files(path)
    db = IndexDatabase(path, key, cache_mb)
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
    return _migrate(db, Path(path), before_migrations)


def _migrate(db, path: Path | None, before_migrations: Callable | None = None):
    """Apply pending migrations; ``path``: the SQLite file, copied first (PostgreSQL: None, its server's job)."""
    db.connect(reuse_if_open=True)
    db.probe()
    runner = Runner(db, directory=str(MIGRATIONS_DIR))
    status = runner.status()
    pending = [m.name for m in status if m.path is not None and not m.applied]
    newer = [m.name for m in status if m.path is None]
    if newer:
        log.warning("index schema is newer than this version (migrations %s unknown here): running after an "
                    "update fell back; the copy made before those migrations is %s.pre-<migration>",
                    ", ".join(newer), path.name if path else "the database server's backup")
    if pending and any(m.applied for m in status):
        if path is not None:
            if before_migrations is not None:
                before_migrations(db)  # a sealed snapshot in the archive, for a rebuild (appliance/services/snapshots.py)
            snapshot_before_migration(db, path, pending[0])  # a plain copy, for a fallen-back update
        else:
            log.warning("index schema: migrating %s to %s; no copy is kept of a PostgreSQL index (back the "
                        "database up on its server before updating)", db.describe(), pending[-1])
    for name in runner.up():
        log.info("index schema: applied migration %s", name)
    return db


def snapshot_before_migration(db: IndexDatabase, path: Path, first_pending: str) -> Path:
    """Copy the index before migrating it (migrations only go forward): a box whose update
    falls back to the previous version still finds an index that version fully knows."""
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    target = path.with_name(f"{path.name}.pre-{first_pending}")
    with open(path, "rb") as src, atomic_output(target, tmp=target.with_name(target.name + ".tmp")) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    log.info("index schema: copy before migrating kept as %s", target.name)
    return target
