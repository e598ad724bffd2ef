"""The index of patients, studies, series and instances (SQLCipher, or PostgreSQL, via peewee).

This package is the only place that knows the database: the models, the SQL
and peewee itself stay in here. The rest of the appliance talks to an
``Index`` through its query engine (``search``/``count``) and its per-area
repositories (``index.studies``, ``index.peers``, ...), each executing against
this Index's own database (see repository.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

from . import query
from .accounts import AccountsRepo
from .audit import AuditRepo
from .backup import BackupRepo
from .batches import BatchesRepo
from .commitments import CommitmentsRepo
from .db import IndexDatabase, open_index, probe
from .postgres import connection_params as _connection_params
from .forwarding import ForwardingRepo
from .models import utcnow  # noqa: F401 - naive UTC, as every stored time: part of the package's interface
from .objects import ObjectsRepo
from .query import multi_values  # noqa: F401 - "\\CT\\MR\\" -> ["CT", "MR"]: part of the package's interface
from .peers import PeersRepo
from .recycling import RecyclingRepo
from .studies import StudiesRepo
from .worklist import WorklistRepo
from .writer import Writer


def check_url(url: str, allow_insecure: bool = False) -> None:
    """Raises ConfigError for an [index] url that could not or may not be used (before anything is made)."""
    _connection_params(url, allow_insecure)


class Index:
    """The index database, its single writer, the query engine and the per-area repositories, together."""

    def __init__(self, db, case_sensitive_names: bool = False):
        self.db = db
        self.writer = Writer(db)
        self.case_sensitive_names = case_sensitive_names
        self.studies = StudiesRepo(db, self.writer)
        self.worklist = WorklistRepo(db, self.writer)
        self.peers = PeersRepo(db, self.writer)
        self.accounts = AccountsRepo(db, self.writer)
        self.audit = AuditRepo(db, self.writer)
        self.forwarding = ForwardingRepo(db, self.writer)
        self.commitments = CommitmentsRepo(db, self.writer)
        self.backup = BackupRepo(db, self.writer)
        self.recycling = RecyclingRepo(db, self.writer)
        self.objects = ObjectsRepo(db, self.writer)
        self.batches = BatchesRepo(db, self.writer)  # write batches in flight (corrections)

    @classmethod
    def open(cls, path: Path, key: bytes, cache_mb: int = 32, case_sensitive_names: bool = False, *,
             url: str = "", allow_insecure: bool = False, before_migrations=None) -> "Index":
        """The SQLCipher file at ``path``, or the PostgreSQL database ``url`` names (db.open_index)."""
        return cls(open_index(path, key, cache_mb, url, allow_insecure, before_migrations), case_sensitive_names)

    def search(self, level: str, criteria: Mapping[str, Any], *, fuzzy: bool = False, case_sensitive_ids: bool = True,
               include_offsite: bool = False, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        return query.search(self.db, level, criteria, case_sensitive_names=self.case_sensitive_names, fuzzy=fuzzy,
                            case_sensitive_ids=case_sensitive_ids, include_offsite=include_offsite,
                            limit=limit, offset=offset)

    def iter_search(self, level: str, criteria: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """``search``'s records as the cursor reads them (query.iter_search): for a caller that sends each on."""
        return query.iter_search(self.db, level, criteria, case_sensitive_names=self.case_sensitive_names)

    def count(self, level: str, criteria: Mapping[str, Any], *, fuzzy: bool = False,
              case_sensitive_ids: bool = True, include_offsite: bool = False) -> int:
        return query.count(self.db, level, criteria, case_sensitive_names=self.case_sensitive_names, fuzzy=fuzzy,
                           case_sensitive_ids=case_sensitive_ids, include_offsite=include_offsite)

    def probe(self) -> None:
        """Raises when the index cannot be read now (the health check)."""
        probe(self.db)

    def start(self) -> None:
        self.writer.start()

    def close(self) -> None:
        self.writer.stop()
        self.db.close()
        self.db._state.idle.close_all()  # those of ended threads (connections.py)
