"""The encrypted object store on the local disk.

Layout under ``<data dir>/archive/``::

    objects/ab/cd/abcd...   one sealed object per file (envelope.py), named by a
                            random 32-hex-digit object id; never a name that came
                            from the network. Consecutive objects share their first
                            4 digits (a random prefix renewed every FANOUT_BATCH
                            objects), so most writes land in an existing directory
                            and skip the two extra directory fsyncs a new one needs
    tmp/                    objects being written; anything here at start-up was
                            never acknowledged and is removed

A write is temp file -> fsync -> rename -> fsync of the directory, so a crash
leaves nothing or a whole object. Objects are written once and never modified.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import IntegrityError, NotFound
from . import envelope
from .fsutil import fsync_dir, private_dir
from .keys import Keyring

log = logging.getLogger(__name__)
OBJECT_ID = re.compile(r"^[0-9a-f]{32}$")
FANOUT_BATCH = 256  # objects written into one fan-out directory before a new random one is picked


@dataclass(frozen=True)
class StoredObject:
    object_id: str
    size: int  # plaintext bytes
    sha256: str  # of the plaintext


class Archive:
    def __init__(self, root: Path, keyring: Keyring, chunk_size: int = 1 << 20):
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.keyring = keyring
        self.chunk_size = chunk_size
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()
        self._prefix = ""
        self._prefix_left = 0

    # -- set-up ------------------------------------------------------------
    def create_dirs(self) -> None:
        for d in (self.root, self.objects_dir, self.tmp_dir):
            private_dir(d)

    def clean_tmp(self) -> int:
        """Remove half-written objects left by a crash (never acknowledged).

        A writer holds an exclusive flock on its temp file until the rename, and
        the kernel drops it when the writer dies; so a file we can lock is
        abandoned, and one we cannot belongs to a live writer (say a CLI import
        running beside a starting server) and is left alone.
        """
        removed = 0
        if self.tmp_dir.exists():
            for entry in self.tmp_dir.iterdir():
                try:
                    fd = os.open(entry, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue  # still being written
                entry.unlink(missing_ok=True)
                os.close(fd)
                removed += 1
        if removed:
            log.warning("removed %d unfinished object(s) left by an interrupted write", removed)
        return removed

    # -- paths -------------------------------------------------------------
    def path(self, object_id: str) -> Path:
        if not OBJECT_ID.match(object_id):
            raise NotFound(f"invalid object id {object_id!r}")
        return self.objects_dir / object_id[:2] / object_id[2:4] / object_id

    # -- writing -----------------------------------------------------------
    def put(self, src: BinaryIO, object_id: str | None = None) -> StoredObject:
        """Seal ``src`` (read to its end) into a new durable object (named ``object_id`` if given,
        which must come from ``new_object_id``)."""
        if object_id is None:
            object_id = self.new_object_id()
        elif not OBJECT_ID.match(object_id):
            raise ValueError(f"invalid object id {object_id!r}")
        digest = hashlib.sha256()
        key_id = self.keyring.current_archive_key
        tmp = self.tmp_dir / object_id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # marks the file as in use for clean_tmp()
        try:
            with os.fdopen(fd, "wb", buffering=1 << 16) as fh:
                size = envelope.seal(src, fh, bytes.fromhex(object_id), key_id,
                                     self.keyring.archive_key(key_id), self.chunk_size, digest.update)
                fh.flush()
                os.fsync(fh.fileno())
                final = self.path(object_id)
                self._ensure_dir(final.parent)
                os.rename(tmp, final)  # still holding the lock, so clean_tmp() cannot race us
            fsync_dir(final.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredObject(object_id, size, digest.hexdigest())

    def put_bytes(self, data: bytes) -> StoredObject:
        return self.put(io.BytesIO(data))

    def new_object_id(self) -> str:
        with self._lock:
            if self._prefix_left <= 0:
                self._prefix, self._prefix_left = secrets.token_hex(2), FANOUT_BATCH
            self._prefix_left -= 1
            return self._prefix + secrets.token_hex(14)

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._known_dirs:
            return
        with self._lock:  # another writer must not use the directory before its entry is durable
            if directory in self._known_dirs:
                return
            if not directory.exists():
                private_dir(directory)  # both fan-out levels 0700, whatever the umask
                fsync_dir(directory.parent)
                fsync_dir(directory.parent.parent)
            self._known_dirs.add(directory)

    def delete(self, object_id: str) -> None:
        path = self.path(object_id)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    # -- reading -----------------------------------------------------------
    def exists(self, object_id: str) -> bool:
        return self.path(object_id).exists()

    def iter_chunks(self, object_id: str) -> Iterator[bytes]:
        """Yield the plaintext in chunks; raises IntegrityError on any damage."""
        path = self.path(object_id)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"archive object {object_id} is missing from the disk") from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            yield from envelope.open_chunks(fh, size, bytes.fromhex(object_id), self.keyring.archive_key,
                                            f"object {object_id}")

    def read(self, object_id: str) -> bytes:
        return b"".join(self.iter_chunks(object_id))

    def copy_to(self, object_id: str, dst: BinaryIO) -> int:
        total = 0
        for chunk in self.iter_chunks(object_id):
            dst.write(chunk)
            total += len(chunk)
        return total

    def verify(self, object_id: str, expected_sha256: str | None = None) -> str:
        """Check every tag (and the digest if given); return the plaintext SHA-256."""
        digest = hashlib.sha256()
        for chunk in self.iter_chunks(object_id):
            digest.update(chunk)
        if expected_sha256 and digest.hexdigest() != expected_sha256:
            raise IntegrityError(f"object {object_id}: content differs from what the index recorded")
        return digest.hexdigest()

    def list_ids(self) -> Iterator[str]:
        """Every object id, in order. scandir's file types spare a stat per entry (2x faster warm)."""
        if not self.objects_dir.exists():
            return

        def subdirs(path) -> list[str]:
            with os.scandir(path) as entries:
                return sorted(e.path for e in entries if e.is_dir())

        for a in subdirs(self.objects_dir):
            for b in subdirs(a):
                with os.scandir(b) as entries:
                    yield from sorted(e.name for e in entries if OBJECT_ID.match(e.name))

    def quarantine(self):
        """The encrypted quarantine of failed imports beside the objects (quarantine.py)."""
        from .quarantine import Quarantine

        return Quarantine(self.root / "quarantine", self.keyring, self.chunk_size)

    def disk_free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free
