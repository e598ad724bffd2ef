"""``pacs-appliance index migrate --to URL``: move a box's index from its SQLCipher file to PostgreSQL.

1. Refused while ``serve`` holds the data directory (datalock.py; held here for the whole move) or
   anything has the index file open (a write after the copy would be lost), when the box already uses PostgreSQL, or when the target database holds rows.
2. The SQLite index is brought to this version's schema (open_index), the target's schema is made by
   the same migrations, then every table is copied in one target transaction, in batches, and its
   row counts checked (index/transfer.py, the copy the backup and restore use too).
3. The migration is recorded in the audit log, whose chain carries on in PostgreSQL.
4. ``[index] url`` is written into ``<data dir>/appliance.toml`` (the file every command and the
   service read; 0600, since the URL may carry a password), then the SQLite file is renamed
   ``index.db.before-postgresql`` (kept, never deleted: the way back, see ``rollback_hint``).
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import config as config_mod
from .archive.fsutil import fsync_dir, write_file_atomic
from .datalock import hold
from .errors import ConfigError, DataDirError
from .index import Index, open_index, rebuilding
from .index.postgres import PostgresIndexDatabase, connection_params, redact
from .index.transfer import TransferError, TransferReport, copy, nonempty_tables

log = logging.getLogger(__name__)
KEPT_SUFFIX = ".before-postgresql"


@dataclass
class MigrateReport:
    transfer: TransferReport
    kept: Path  # the SQLite index, renamed
    config_path: Path


def holders(path: Path) -> list[int]:
    """Other processes (of this user: /proc shows only those) that have ``path`` open."""
    target = str(Path(path).resolve())
    wanted = {target, f"{target}-wal", f"{target}-shm"}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:  # gone, or another user's
            continue
        if links & wanted:
            found.append(int(pid))
    return found


def ensure_stopped(index_path: Path) -> None:
    """Refuse while any process has the index open: its later writes would be lost. The data-directory lock
    (datalock.py) keeps ``serve`` and a rebuild out; commands that share the index with a running server
    (user, correct, import ...) do not take it, so who has the file open is checked as well."""
    pids = holders(index_path)
    if pids:
        raise DataDirError(f"the index {index_path} is open in process {', '.join(map(str, pids))}: stop it "
                           "first (the service: systemctl stop pacs-appliance), then migrate")


def set_index_url(data_dir: Path, url: str, allow_insecure: bool = False) -> Path:
    """Name ``url`` as the index in the data directory's appliance.toml (an existing ``url`` line in [index]
    is replaced, else the line goes right under [index], made if missing); returns the file's path."""
    path = Path(data_dir) / config_mod.CONFIG_FILE_NAME
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    new = [f"url = {json.dumps(url)}"] + (["allow_insecure = true"] if allow_insecure else [])
    header = next((i for i, line in enumerate(lines) if re.fullmatch(r"\s*\[index\]\s*(#.*)?", line)), None)
    if header is None:
        lines += ["", "[index]"] + new
    else:
        end = next((i for i in range(header + 1, len(lines)) if re.match(r"\s*\[", lines[i])), len(lines))
        keys = ("url",) + (("allow_insecure",) if allow_insecure else ())
        body = [line for line in lines[header + 1:end] if not re.match(rf"\s*({'|'.join(keys)})\s*=", line)]
        lines = lines[:header + 1] + new + body + lines[end:]
    write_file_atomic(path, ("\n".join(lines) + "\n").encode("utf-8"))  # 0600: the URL may hold a password
    if config_mod.load(Path(data_dir), env={}).index.url != url:
        raise ConfigError(f"{path}: [index] url could not be set; add the line {new[0]!r} under [index] yourself")
    return path


def open_empty_target(url: str, allow_insecure: bool = False):
    """The PostgreSQL database ``url`` names, refused if it holds rows, then given the index schema."""
    probe = PostgresIndexDatabase(url, allow_insecure)
    try:
        probe.connect()
        busy = nonempty_tables(probe)
    finally:
        probe.close()
    if busy:
        raise TransferError(f"{redact(url)} is not empty ({', '.join(busy[:5])} hold rows): the index goes only "
                            "into an empty database (or an empty schema: ?options=-csearch_path%3D<schema>)")
    return open_index(Path(os.devnull), b"", url=url, allow_insecure=allow_insecure)


def rollback_hint(data_dir: Path, kept: Path) -> str:
    return (f"to go back to the SQLite index: stop the service, delete the [index] url line from "
            f"{Path(data_dir) / config_mod.CONFIG_FILE_NAME}, rename {kept.name} to index.db (what was written "
            "to PostgreSQL since is not in it)")


def migrate(cfg, index_key: bytes, url: str, allow_insecure: bool = False,
            progress: Callable[[str, int], None] | None = None) -> MigrateReport:
    """Move the index of the data directory ``cfg`` describes into the PostgreSQL database ``url``."""
    if cfg.index.url:
        raise ConfigError(f"this box's index is already on PostgreSQL ({redact(cfg.index.url)}, from "
                          f"{cfg.sources['index.url']}): nothing to migrate")
    connection_params(url, allow_insecure)  # a bad or cleartext-remote URL: refused before anything
    index_path = cfg.index_path
    if not index_path.exists():
        raise DataDirError(f"{index_path} does not exist: no SQLite index to migrate")
    kept = index_path.with_name(index_path.name + KEPT_SUFFIX)
    if kept.exists():
        raise DataDirError(f"{kept} exists (from an earlier migration): move it away first")
    lock = hold(cfg.data_dir, "index migrate")  # refuses while `serve` runs; serve refuses while this does
    try:
        ensure_stopped(index_path)
        return _migrate(cfg, index_key, url, allow_insecure, kept, progress)
    finally:
        os.close(lock)


def _migrate(cfg, index_key: bytes, url: str, allow_insecure: bool, kept: Path, progress) -> MigrateReport:
    index_path = cfg.index_path
    src = open_index(index_path, index_key)  # at this version's schema (a copy is kept if it migrates)
    try:
        dst = open_empty_target(url, allow_insecure)
        try:
            report = copy(src, dst, progress=progress)
            from .records.audit import AuditLog  # the chain continues in PostgreSQL

            AuditLog(Index(dst)).record("index.migrate", "cli", detail=(
                f"from the SQLite index to {redact(url)}: {report.total} rows in {len(report.rows)} tables"))
        finally:
            dst.close()
        rebuilding.checkpoint(src)  # the file self-contained before it is renamed
    finally:
        src.close()

    config_path = set_index_url(cfg.data_dir, url, allow_insecure)
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{index_path}{suffix}")
        if part.exists():
            os.replace(part, Path(f"{kept}{suffix}"))
    fsync_dir(index_path.parent)
    log.warning("index migrated to %s; the SQLite index is kept as %s", redact(url), kept.name)
    return MigrateReport(report, kept, config_path)
