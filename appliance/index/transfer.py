"""Copy every table of one index into another, empty one: the single "dump and load" of the index.

Used by ``pacs-appliance index migrate`` (the SQLCipher file into PostgreSQL), by the offsite
backup of a PostgreSQL index (PostgreSQL into a fresh SQLCipher snapshot file: the same sealed
snapshot format as an embedded index's) and by a restore onto PostgreSQL (the snapshot file into
the server). Either backend can be the source or the destination.

- Both databases must carry the same applied migrations (the callers open them with
  ``open_index``, which migrates); the destination's schema is made by those migrations, not here.
- The source is read in one transaction (PostgreSQL: REPEATABLE READ, so every table is the same
  committed state while the box keeps writing; SQLite: one read transaction over the WAL).
- The destination is written in one transaction: all of it or nothing; it must hold no rows.
- Rows stream in batches of ``batch`` (``batches``: a server-side cursor on PostgreSQL): memory stays bounded
  whatever the size of the index.
- Tables go parents first (their foreign keys); ids are copied as they are, and PostgreSQL's
  identity sequences are then moved past the highest copied id.
- Row counts are checked table by table before the destination commits.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ApplianceError

HISTORY_TABLE = "schema_migration"  # the migration runner's own record: each side keeps its own


class TransferError(ApplianceError):
    """The copy could not be made or did not match; the destination was left unchanged."""

    exit_code = 2


@dataclass
class TransferReport:
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows copied (and verified)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _is_postgres(db) -> bool:
    from .postgres import PostgresIndexDatabase

    return isinstance(db, PostgresIndexDatabase)


def tables(db) -> list[str]:
    """The index's tables (not the migration history), parents before the tables referring to them."""
    names = [t for t in db.get_tables() if t != HISTORY_TABLE and not t.startswith("sqlite_")]
    parents = {t: {fk.dest_table for fk in db.get_foreign_keys(t) if fk.dest_table != t} for t in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [t for t in names if t not in ordered and parents[t] <= set(ordered)]
        if not ready:
            raise TransferError(f"the index's foreign keys form a cycle among {sorted(set(names) - set(ordered))}")
        ordered += ready
    return ordered


def _migrations(db) -> list[str]:
    return sorted(name for (name,) in db.execute_sql(f'SELECT "name" FROM "{HISTORY_TABLE}"').fetchall())


def _columns(db, table: str) -> list[str]:
    return [c.name for c in db.get_columns(table)]


def _count(db, table: str) -> int:
    return db.execute_sql(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def nonempty_tables(db) -> list[str]:
    """The index tables of ``db`` that hold rows (a copy goes only into an empty index)."""
    return [t for t in tables(db) if db.execute_sql(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()]


def _for_sqlite(value):
    # PostgreSQL hands back datetime objects; the SQLite index stores them as peewee writes them.
    if isinstance(value, datetime.datetime):
        return value.isoformat(" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _insert(db, table: str, columns: list[str], rows: list[tuple]) -> None:
    cols = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join([db.param] * len(columns))
    if not _is_postgres(db):
        rows = [tuple(_for_sqlite(v) for v in row) for row in rows]
    cur = db.cursor()
    try:
        # The driver's own executemany (peewee's execute_sql has none): psycopg pipelines it.
        cur.executemany(f'INSERT INTO "{table}" ({cols}) VALUES ({marks})', rows)
    finally:
        cur.close()


def advance_sequence(db, table: str) -> None:
    """PostgreSQL: the next generated id follows the highest one written explicitly (SQLite takes max(rowid) + 1
    itself)."""
    if _is_postgres(db):
        db.execute_sql(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), max(\"id\")) "
                       f'FROM "{table}" HAVING max("id") IS NOT NULL')


def copy(src, dst, *, batch: int = 1000, progress: Callable[[str, int], None] | None = None) -> TransferReport:
    """Copy every row of the index ``src`` into the empty index ``dst`` (peewee databases, either backend)."""
    progress = progress or (lambda _table, _rows: None)
    src.connect(reuse_if_open=True)
    dst.connect(reuse_if_open=True)
    if _migrations(src) != _migrations(dst):
        raise TransferError("the two indexes are at different schema versions (open both with this version first): "
                            f"{src.describe()} has {_migrations(src)[-1:]}, {dst.describe()} {_migrations(dst)[-1:]}")
    order = tables(src)
    if sorted(order) != sorted(tables(dst)):
        raise TransferError(f"the two indexes have different tables: {sorted(set(order) ^ set(tables(dst)))}")
    report = TransferReport()
    read_args = ("REPEATABLE READ",) if _is_postgres(src) else ()
    with src.atomic(*read_args), dst.atomic(*dst.write_lock):
        busy = nonempty_tables(dst)
        if busy:
            raise TransferError(f"{dst.describe()} already holds an index ({', '.join(busy[:5])} have rows): "
                                "the copy goes only into an empty database")
        for table in order:
            columns = _columns(src, table)
            missing = set(columns) - set(_columns(dst, table))
            if missing:
                raise TransferError(f"{dst.describe()}: table {table} lacks columns {sorted(missing)}")
            expected = _count(src, table)
            cols = ", ".join(f'"{c}"' for c in columns)
            order_by = ' ORDER BY "id"' if "id" in columns else ""
            copied = 0
            try:
                for rows in src.batches(f'SELECT {cols} FROM "{table}"{order_by}', (), batch):
                    _insert(dst, table, columns, rows)
                    copied += len(rows)
                    progress(table, copied)
            except Exception as exc:  # the driver's message may quote a row (patient data): only its kind here
                raise TransferError(f"table {table}: a row could not be copied after {copied} "
                                    f"({type(exc).__name__}); nothing was kept") from exc
            landed = _count(dst, table)
            if not expected == copied == landed:
                raise TransferError(f"table {table}: {expected} rows in the source, {copied} read, {landed} written; "
                                    "nothing was kept")
            if "id" in columns:
                advance_sequence(dst, table)
            report.rows[table] = landed
    return report
