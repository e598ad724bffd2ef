"""The encrypted object store on the local disk.

Layout under ``<data dir>/archive/``::

    objects/ab/cd/abcd...   one sealed object per file (envelope.py), named by a
                            random 32-hex-digit object id; never a name that came
                            from the network. Consecutive objects share their first
                            4 digits (a random prefix renewed every FANOUT_BATCH
                            objects), so most writes land in an existing directory
                            and skip the two extra directory fsyncs a new one needs
    tmp/                    objects being written; anything here at start-up was
                            never acknowledged and is removed. A disaster restore also
                            receives its downloads here (``staging("tmp")``)
    restoring/              recycled objects downloaded for ``storage restore``, checked,
                            waiting for the transaction that indexes them (``staging``)
    orphans/                objects no index row named at start-up (``quarantine_orphans``),
                            kept whole under their own names
    reserved/abcd           a marker: objects/ab/cd/ may hold reserved files (see below)

The layout is private to this package: the rest of the appliance uses the
interface in area.py (tests/architecture/test_archive_seam.py checks).

A write is temp file -> fsync -> rename -> fsync of the directory, so a crash
leaves nothing or a whole object. Objects are written once and never modified.

Reserved entries (the ingest hot path, ``put`` without an object id): the
directory fsync after each rename was one of three fsyncs in series before a
C-STORE success (object, directory, index WAL; 1-4 ms each on a busy disk). So
``put`` writes into a *reserved* file instead: an empty file created ahead, in a
batch of RESERVE_BATCH, at its final name in mode 0200 (RESERVED_MODE), its
directory entry made durable by one directory fsync for the whole batch. Writing
it is seal -> chmod 0600 -> fsync of the file: the name is already durable, so that
one fsync makes the object durable. A file still in mode 0200 is no object:
``list_ids`` skips it, and start-up (``clean_tmp``) deletes every one not locked by
a live writer in the directories ``reserved/abcd`` markers name (a marker is durable
before its directory's reserved files exist). A crash during such a write leaves an
unindexed, never acknowledged file: in mode 0200 (deleted at start-up) or, if the
chmod reached the disk before all the data, an unindexed object that start-up
reconciliation puts aside with the other orphans.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import secrets
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from ..errors import IntegrityError, NotFound
from . import envelope
from .fsutil import claim_abandoned, fsync_dir, private_dir
from .keys import Keyring
from .snapshots import SnapshotShelf
from .staging import FileStaging

log = logging.getLogger(__name__)
OBJECT_ID = envelope.OBJECT_ID
ORPHANS_DIR = "orphans"
SNAPSHOTS_DIR = "snapshots"  # sealed index snapshots (snapshots.py)
STAGING_DIRS = ("tmp", "restoring")
FANOUT_BATCH = 256  # objects written into one fan-out directory before a new random one is picked
RESERVED_DIR = "reserved"
RESERVED_MODE = 0o200  # a reserved, not yet written object file (a whole object is 0600)
RESERVE_BATCH = 64  # reserved files made per directory fsync


@dataclass(frozen=True)
class StoredObject:
    object_id: str
    size: int  # plaintext bytes
    sha256: str  # of the plaintext


class Archive:
    def __init__(self, root: Path, keyring: Keyring, chunk_size: int = 1 << 20):
        self._root = Path(root)
        self._objects_dir = self._root / "objects"
        self._tmp_dir = self._root / "tmp"
        self.keyring = keyring
        self.chunk_size = chunk_size
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()
        self._prefix = ""
        self._prefix_left = 0
        self._reserved_dir = self._root / RESERVED_DIR
        self._reserved: list[str] = []  # object ids whose empty files and entries are durable
        self._reserve_lock = threading.Lock()
        self._refill_lock = threading.Lock()
        self._refilling = False
        self.snapshots = SnapshotShelf(self._root / SNAPSHOTS_DIR, keyring, chunk_size)

    # -- set-up ------------------------------------------------------------
    def create_dirs(self) -> None:
        for d in (self._root, self._objects_dir, self._tmp_dir):
            private_dir(d)

    def clean_tmp(self) -> int:
        """Remove half-written objects left by a crash (never acknowledged).

        A writer holds an exclusive flock on its temp file until the rename, and
        the kernel drops it when the writer dies; so a file we can lock is
        abandoned, and one we cannot belongs to a live writer (say a CLI import
        running beside a starting server) and is left alone.
        """
        removed = 0
        if self._tmp_dir.exists():
            for entry in self._tmp_dir.iterdir():
                with claim_abandoned(entry) as abandoned:
                    if abandoned:  # else still being written
                        entry.unlink(missing_ok=True)
                        removed += 1
        removed += self._clean_reserved()
        if removed:
            log.warning("removed %d unfinished object(s) left by an interrupted write", removed)
        return removed

    # -- paths -------------------------------------------------------------
    def _path(self, object_id: str) -> Path:
        if not OBJECT_ID.match(object_id):
            raise NotFound(f"invalid object id {object_id!r}")
        return self._objects_dir / object_id[:2] / object_id[2:4] / object_id

    # -- writing -----------------------------------------------------------
    def put(self, src: BinaryIO, object_id: str | None = None) -> StoredObject:
        """Seal ``src`` (read to its end) into a new durable object (named ``object_id`` if given,
        which must come from ``new_object_id``)."""
        if object_id is None:
            stored = self._put_reserved(src)
            if stored is not None:
                return stored
            object_id = self.new_object_id()
        elif not OBJECT_ID.match(object_id):
            raise ValueError(f"invalid object id {object_id!r}")
        digest = hashlib.sha256()
        key_id = self.keyring.current_archive_key
        tmp = self._tmp_dir / object_id
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # marks the file as in use for clean_tmp()
        try:
            with os.fdopen(fd, "wb", buffering=1 << 16) as fh:
                size = envelope.seal(src, fh, bytes.fromhex(object_id), key_id,
                                     self.keyring.archive_key(key_id), self.chunk_size, digest.update)
                fh.flush()
                os.fsync(fh.fileno())
                final = self._path(object_id)
                self._ensure_dir(final.parent)
                os.rename(tmp, final)  # still holding the lock, so clean_tmp() cannot race us
            fsync_dir(final.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return StoredObject(object_id, size, digest.hexdigest())

    def _put_reserved(self, src: BinaryIO) -> StoredObject | None:
        """Seal ``src`` into a reserved file (one fsync); None if no reserved file could be used
        (another process's start-up removed it), and ``src`` is then untouched."""
        object_id = self._take_reserved()
        path = self._path(object_id)
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX)  # a starting process's clean_tmp() leaves a locked file alone
        if os.fstat(fd).st_nlink == 0:  # ... but it may have deleted this one just before we locked it
            os.close(fd)
            return None
        digest = hashlib.sha256()
        key_id = self.keyring.current_archive_key
        try:
            with os.fdopen(fd, "wb", buffering=1 << 16) as fh:
                size = envelope.seal(src, fh, bytes.fromhex(object_id), key_id,
                                     self.keyring.archive_key(key_id), self.chunk_size, digest.update)
                fh.flush()
                os.fchmod(fh.fileno(), 0o600)  # whole: no longer a reservation
                os.fsync(fh.fileno())  # data and mode; the name was durable already
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return StoredObject(object_id, size, digest.hexdigest())

    def _take_reserved(self) -> str:
        with self._reserve_lock:
            if not self._reserved:
                self._reserve(RESERVE_BATCH)
            elif len(self._reserved) == RESERVE_BATCH // 4 and not self._refilling:
                # make the next batch beside the writers, off the path to their C-STORE responses
                self._refilling = True
                threading.Thread(target=self._refill, name="archive-reserve", daemon=True).start()
            return self._reserved.pop()

    def _refill(self) -> None:
        try:
            with self._refill_lock:  # one batch at a time; the writers keep taking meanwhile
                batch = self._reserve(RESERVE_BATCH, keep=False)
            with self._reserve_lock:
                self._reserved[:0] = batch  # taken last: the current batch's directory is used up first
        except OSError as exc:  # a full disk, say: the writers reserve for themselves (and report it)
            log.warning("could not reserve archive entries ahead: %s", exc)
        finally:
            self._refilling = False

    def _reserve(self, count: int, keep: bool = True) -> list[str]:
        """Create ``count`` empty reserved files (all in one or two fan-out directories) and make
        their entries durable (the marker naming their directory is durable first); add them to
        the pool (``keep``) or return them."""
        with self._lock:
            ids = [self._next_id() for _ in range(count)]
        by_dir: dict[Path, list[str]] = {}
        for oid in ids:
            by_dir.setdefault(self._path(oid).parent, []).append(oid)
        for directory, oids in by_dir.items():
            self._mark_reserved(directory)
            self._ensure_dir(directory)
            for oid in oids:
                os.close(os.open(directory / oid, os.O_WRONLY | os.O_CREAT | os.O_EXCL, RESERVED_MODE))
            fsync_dir(directory)
        ids.reverse()  # popped from the end: in order
        if keep:
            self._reserved.extend(ids)
        return ids

    def _mark_reserved(self, directory: Path) -> None:
        marker = self._reserved_dir / (directory.parent.name + directory.name)
        if marker.exists():
            return
        private_dir(self._reserved_dir)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))
        fsync_dir(self._reserved_dir)
        fsync_dir(self._root)

    def _reserved_dirs(self) -> list[tuple[Path, Path]]:
        """(marker, fan-out directory) for every directory that may hold reserved files."""
        if not self._reserved_dir.is_dir():
            return []
        return [(m, self._objects_dir / m.name[:2] / m.name[2:4]) for m in sorted(self._reserved_dir.iterdir())
                if len(m.name) == 4]

    def _clean_reserved(self) -> int:
        """Delete reserved files no live writer holds (a crash or stop left them); returns how many."""
        removed = 0
        for marker, directory in self._reserved_dirs():
            busy = False
            entries = list(os.scandir(directory)) if directory.is_dir() else []
            for entry in entries:
                outcome = self._remove_if_reserved(entry)
                busy = busy or outcome is None
                removed += bool(outcome)
            if directory.is_dir():
                fsync_dir(directory)
            if not busy:
                marker.unlink(missing_ok=True)
        with self._reserve_lock:
            self._reserved = [oid for oid in self._reserved if self._path(oid).exists()]
        return removed

    @staticmethod
    def _remove_if_reserved(entry: os.DirEntry) -> bool | None:
        """Delete ``entry`` if it is an unwritten reserved file: True if deleted, None if a live
        writer holds it, False otherwise (an object)."""
        try:
            if not OBJECT_ID.match(entry.name) or stat.S_IMODE(entry.stat().st_mode) != RESERVED_MODE:
                return False
            fd = os.open(entry.path, os.O_WRONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            if stat.S_IMODE(os.fstat(fd).st_mode) != RESERVED_MODE:
                return False  # written meanwhile
            os.unlink(entry.path)
            return True
        finally:
            os.close(fd)

    def put_bytes(self, data: bytes) -> StoredObject:
        return self.put(io.BytesIO(data))

    def new_object_id(self) -> str:
        with self._lock:
            return self._next_id()

    def _next_id(self) -> str:
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
        path = self._path(object_id)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def delete_many(self, object_ids: Iterable[str]) -> int:
        dirs = set()
        deleted = 0
        for oid in object_ids:
            path = self._path(oid)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            dirs.add(path.parent)
            deleted += 1
        for d in dirs:  # one fsync per directory, not per object
            fsync_dir(d)
        return deleted

    # -- objects from elsewhere, and objects put aside ------------------------
    def staging(self, name: str) -> FileStaging:
        if name not in STAGING_DIRS:
            raise ValueError(f"unknown staging folder {name!r}")
        return FileStaging(self._root / name, self.keyring)

    def adopt(self, staging: FileStaging, object_id: str) -> None:
        """A rename (the staging folder is on the same file system); directories are made as needed,
        unsynced: ``sync_adopted`` makes a whole batch durable at once."""
        final = self._path(object_id)
        private_dir(final.parent)  # both fan-out levels 0700, whatever the umask
        os.rename(staging.file(object_id), final)

    def sync_adopted(self, object_ids: Iterable[str]) -> None:
        for d in {self._path(oid).parent for oid in object_ids}:
            if d.exists():
                fsync_dir(d)
                fsync_dir(d.parent)
        fsync_dir(self._objects_dir)

    def quarantine_orphans(self, object_ids: Iterable[str]) -> str:
        """Move objects to ``orphans/`` under the same name (the envelope is bound to it: still readable)."""
        moved_to = self._root / ORPHANS_DIR
        private_dir(moved_to)
        for object_id in object_ids:
            source = self._path(object_id)
            os.rename(source, moved_to / object_id)
            fsync_dir(source.parent)
        fsync_dir(moved_to)
        fsync_dir(self._root)
        return str(moved_to)

    # -- reading -----------------------------------------------------------
    def exists(self, object_id: str) -> bool:
        return self._path(object_id).exists()

    def iter_chunks(self, object_id: str) -> Iterator[bytes]:
        """Yield the plaintext in chunks; raises IntegrityError on any damage."""
        path = self._path(object_id)
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

    def open_sealed(self, object_id: str) -> BinaryIO:
        try:
            return open(self._path(object_id), "rb")
        except FileNotFoundError:
            raise NotFound(f"archive object {object_id} is missing from the disk") from None

    def sealed_size(self, object_id: str) -> int | None:
        try:
            return self._path(object_id).stat().st_size
        except (FileNotFoundError, NotFound):
            return None

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
        if not self._objects_dir.exists():
            return

        def subdirs(path) -> list[str]:
            with os.scandir(path) as entries:
                return sorted(e.path for e in entries if e.is_dir())

        reserving = {str(d) for _m, d in self._reserved_dirs()}
        for a in subdirs(self._objects_dir):
            for b in subdirs(a):
                with os.scandir(b) as entries:
                    if b in reserving:  # a stat each only where reserved files may be
                        yield from sorted(e.name for e in entries if OBJECT_ID.match(e.name)
                                          and stat.S_IMODE(e.stat().st_mode) != RESERVED_MODE)
                    else:
                        yield from sorted(e.name for e in entries if OBJECT_ID.match(e.name))

    def written_at(self, object_id: str) -> float:
        """When the object was written (its file's mtime, seconds since the epoch): objects are never
        modified, so this orders them by arrival (a rebuild replays them in that order)."""
        return self._path(object_id).stat().st_mtime

    def clock(self) -> float:
        """The mtime a file written now gets (the kernel's coarse file clock, which can lag time.time() by a
        tick): a marker written and removed in tmp/, which is on the objects' file system."""
        fd, path = tempfile.mkstemp(prefix=".clock-", dir=self._tmp_dir)
        try:
            os.write(fd, b"\0")
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)
            os.unlink(path)

    def has_objects(self) -> bool:
        """True if at least one object is stored (cheap: stops at the first)."""
        return next(iter(self.list_ids()), None) is not None

    def quarantine(self):
        """The encrypted quarantine of failed imports beside the objects (quarantine.py)."""
        from .quarantine import Quarantine

        return Quarantine(self._root / "quarantine", self.keyring, self.chunk_size)

    def disk_free_bytes(self) -> int:
        return shutil.disk_usage(self._root).free
