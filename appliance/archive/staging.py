"""A staging folder: sealed objects received from elsewhere (an offsite copy), checked, waiting to be adopted.

One implementation of "download, verify every tag" for both ways back from the
offsite copy (backup/restore.py and services/recycle.py): the bytes are written and
fsynced, then every GCM tag is checked against the object id, and only a whole,
authentic object is ever handed to ``Archive.adopt`` (a rename into place).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from ..errors import NotFound
from . import envelope
from .fsutil import private_dir
from .keys import Keyring

COPY_BLOCK = 1 << 20


class FileStaging:
    def __init__(self, directory: Path, keyring: Keyring):
        self._dir = Path(directory)
        self._keyring = keyring

    def file(self, object_id: str) -> Path:
        """Where a received object lies (for ``Archive.adopt`` only: the same package)."""
        if not envelope.OBJECT_ID.match(object_id):
            raise NotFound(f"invalid object id {object_id!r}")
        return self._dir / object_id

    def receive(self, object_id: str, src: BinaryIO) -> int:
        """Copy in, fsync, check every tag; return the size. On any failure (IntegrityError for a damaged
        object) nothing is kept."""
        path = self.file(object_id)
        private_dir(self._dir)
        try:
            with open(path, "wb") as dst:
                while block := src.read(COPY_BLOCK):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
                size = os.fstat(dst.fileno()).st_size
            with open(path, "rb") as check:  # every tag, before the object is used
                for _chunk in envelope.open_chunks(check, size, bytes.fromhex(object_id), self._keyring.archive_key,
                                                   f"offsite object {object_id}"):
                    pass
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return size

    def read(self, object_id: str) -> bytes:
        path = self.file(object_id)
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            return b"".join(envelope.open_chunks(fh, size, bytes.fromhex(object_id), self._keyring.archive_key,
                                                 f"object {object_id}"))

    def ids(self) -> list[str]:
        if not self._dir.exists():
            return []
        return sorted(p.name for p in self._dir.iterdir())

    def clear(self) -> int:
        removed = 0
        if self._dir.exists():
            for entry in self._dir.iterdir():
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

