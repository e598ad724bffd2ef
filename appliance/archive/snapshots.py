"""Sealed copies of the index kept in the archive (issue 15): what the DICOM objects do not hold.

Users, peers, the worklist, the audit chain, backup and recycling state and settings
live only in the index. A few generations of index snapshots are kept beside the
objects, sealed exactly like them (envelope.py, the archive's current key), so a lost
or damaged index can be rebuilt from the archive alone (appliance/index/rebuild.py).

A snapshot's file name is ``<taken at, UTC>-<32 hex id>``; the id is bound into every
GCM tag like an object id, so snapshots cannot be swapped or renamed unnoticed. The
name's time orders the generations. Writes are temp file, fsync, rename, fsync dir.
"""
from __future__ import annotations

import datetime
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from . import envelope
from .fsutil import atomic_output, fsync_dir
from .keys import Keyring

log = logging.getLogger(__name__)
NAME = re.compile(r"^(\d{8}T\d{6}\d{6}Z)-([0-9a-f]{32})$")
STAMP = "%Y%m%dT%H%M%S%fZ"


@dataclass(frozen=True)
class Snapshot:
    name: str
    taken_at: datetime.datetime  # naive UTC, as every stored time
    size: int  # bytes as stored (sealed)


class SnapshotShelf:
    """The ``snapshots/`` folder of one archive."""

    def __init__(self, directory: Path, keyring: Keyring, chunk_size: int = 1 << 20):
        self.directory = Path(directory)
        self.keyring = keyring
        self.chunk_size = chunk_size

    def put(self, plain: Path, taken_at: datetime.datetime) -> Snapshot:
        """Seal the file ``plain`` in as a new generation taken at ``taken_at`` (naive UTC)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{taken_at.strftime(STAMP)}-{secrets.token_hex(16)}"
        final = self.directory / name
        key_id = self.keyring.current_archive_key
        with open(plain, "rb") as src, atomic_output(final, tmp=self.directory / f".{name}.tmp") as dst:
            envelope.seal(src, dst, bytes.fromhex(name[-32:]), key_id, self.keyring.archive_key(key_id),
                          self.chunk_size)
        return Snapshot(name, taken_at, final.stat().st_size)

    def list(self) -> list[Snapshot]:
        """Every generation, newest first."""
        if not self.directory.exists():
            return []
        found = []
        for entry in self.directory.iterdir():
            m = NAME.match(entry.name)
            if m:
                taken = datetime.datetime.strptime(m.group(1), STAMP)
                found.append(Snapshot(entry.name, taken, entry.stat().st_size))
        return sorted(found, key=lambda s: s.name, reverse=True)

    def open_to(self, name: str, dest: Path) -> None:
        """Decrypt generation ``name`` into ``dest``, checking every tag (IntegrityError on damage)."""
        if not NAME.match(name):
            raise ValueError(f"invalid snapshot name {name!r}")
        path = self.directory / name
        with open(path, "rb") as fh, atomic_output(dest, tmp=dest.with_name(dest.name + ".part")) as out:
            size = os.fstat(fh.fileno()).st_size
            for chunk in envelope.open_chunks(fh, size, bytes.fromhex(name[-32:]), self.keyring.archive_key,
                                              f"index snapshot {name}"):
                out.write(chunk)

    def prune(self, keep: int) -> list[str]:
        """Drop all but the newest ``keep`` generations (and temp files a crash left); return the names dropped."""
        dropped = [s.name for s in self.list()[max(keep, 1):]]
        for name in dropped:
            (self.directory / name).unlink(missing_ok=True)
        if self.directory.exists():
            for entry in self.directory.glob(".*.tmp"):
                entry.unlink(missing_ok=True)
            fsync_dir(self.directory)
        return dropped
