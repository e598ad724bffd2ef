"""The index of patients, studies, series and instances (SQLCipher via peewee)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from . import query
from .db import IndexDatabase, open_index
from .writer import Writer


class Index:
    """The index database, its single writer and the query engine, together."""

    def __init__(self, db: IndexDatabase, case_sensitive_names: bool = False):
        self.db = db
        self.writer = Writer(db)
        self.case_sensitive_names = case_sensitive_names

    @classmethod
    def open(cls, path: Path, key: bytes, cache_mb: int = 64, case_sensitive_names: bool = False) -> "Index":
        return cls(open_index(path, key, cache_mb), case_sensitive_names)

    def search(self, level: str, criteria: Mapping[str, Any], *, fuzzy: bool = False, case_sensitive_ids: bool = True,
               include_offsite: bool = False, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        return query.search(level, criteria, case_sensitive_names=self.case_sensitive_names, fuzzy=fuzzy,
                            case_sensitive_ids=case_sensitive_ids, include_offsite=include_offsite,
                            limit=limit, offset=offset)

    def count(self, level: str, criteria: Mapping[str, Any], *, fuzzy: bool = False,
              case_sensitive_ids: bool = True, include_offsite: bool = False) -> int:
        return query.count(level, criteria, case_sensitive_names=self.case_sensitive_names, fuzzy=fuzzy,
                           case_sensitive_ids=case_sensitive_ids, include_offsite=include_offsite)

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        self.writer.stop()
        self.db.close()
