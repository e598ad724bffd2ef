"""The base of the index's repositories: one area's reads and writes against one Index's database.

The peewee models (models/) are never bound to a database. A repository builds
queries from them and executes each against its own ``db`` explicitly
(``query.execute(self.db)``, ``.get_or_none(self.db)``, ``.count(self.db)``,
``.scalar(self.db)``), so two Index objects in one process, in any thread, each
see only their own rows. Model instances a repository returns are plain
records: their ``save()``, ``delete_instance()`` and lazy foreign-key loads would
need a bound model, so writes go through repository methods instead.

Writes run on the Index's single writer: a method that changes rows either
submits itself (``self.writer.run``) or says in its docstring that it runs
inside a writer transaction already (called from a function given to the writer).
"""
from __future__ import annotations

from peewee import Database

from .writer import Writer


class Repository:
    def __init__(self, db: Database, writer: Writer):
        self.db = db
        self.writer = writer
