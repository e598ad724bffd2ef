"""The base of the index's repositories: one area's reads and writes against one Index's database.

The peewee models (models/) are never bound to a database. A repository builds
queries from them and executes each against its own ``db`` explicitly
(``query.execute(self.db)``, ``.get_or_none(self.db)``, ``.count(self.db)``,
``.scalar(self.db)``), so two Index objects in one process, in any thread, each
see only their own rows.

What a repository hands out are plain frozen dataclasses (records), not model
instances: nothing outside this package can run a query through them, and a
second backend only has to fill the same records.

Writes run on the Index's single writer. A method that changes rows either
submits itself (``self.writer.run``) or says "inside the writer" in its
docstring: then it is meant to be called from a function already running on
the writer, so that several changes commit together.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, TypeVar

from peewee import Database

from .writer import Writer

R = TypeVar("R")


def to_record(cls: type[R], row: Mapping[str, Any]) -> R:
    """A record dataclass from a row dict (``query.dicts()``), taking the fields the record names."""
    return cls(**{f.name: row[f.name] for f in fields(cls)})  # type: ignore[arg-type]


class Repository:
    def __init__(self, db: Database, writer: Writer):
        self.db = db
        self.writer = writer

    def _all(self, cls: type[R], query) -> list[R]:
        return [to_record(cls, row) for row in query.dicts().execute(self.db)]

    def _first(self, cls: type[R], query) -> R | None:
        row = query.dicts().first(self.db)
        return None if row is None else to_record(cls, row)


class NamedIds:
    """The object ids that rows of ``table`` name, for ``in`` and ``len`` only: each ``in`` is one lookup on the
    table's unique ``object_id`` index, so a pass over a million ids (a disaster restore checking its
    manifest) never holds them all in memory, as a set of them did."""

    def __init__(self, db: Database, table: str):
        self.db, self.table = db, table

    def __contains__(self, object_id: object) -> bool:
        return bool(self.db.execute_sql(f'SELECT 1 FROM "{self.table}" WHERE "object_id" = ?',
                                        (object_id,)).fetchall())

    def __len__(self) -> int:
        return self.db.execute_sql(f'SELECT count(*) FROM "{self.table}"').fetchone()[0]
