"""The encrypted quarantine of failed imports (``archive/quarantine/``).

A file the inbox cannot import (not DICOM, truncated, a ZIP with a bad member,
a refused replacement ...) used to stay in ``inbox/failed/`` as plaintext, with
patient names readable by anyone holding the disk. Now it is sealed here with
the reason, and only then removed from the inbox.

Each item is one file ``quarantine/<item id>`` (32 random hex digits, never a
name from the input), sealed with the archive's envelope (envelope.py: AES-256-GCM
chunks, current archive key) and bound to ``quarantine:`` + its id, so an item
can be neither swapped with another nor passed off as an archive object. Its
plaintext is ``MAGIC``, a 4-byte big-endian length, a JSON header (original
name inside the inbox, reason, time, origin, size, kind) and then the file's
bytes exactly as they were. Names and reasons are sealed too: a folder may be
named after a patient. Listing decrypts only the first chunk of each item.

Writes are atomic (temp file, fsync, rename, fsync the folder); a temp file
left by a crash is sealed, and removed after a day.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import re
import secrets
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from ..errors import IntegrityError, NotFound
from . import envelope
from .fsutil import atomic_output, fsync_dir, private_dir

MAGIC = b"PACSQUAR1\n"
LENGTH = struct.Struct(">I")
ITEM_ID = re.compile(r"^[0-9a-f]{32}$")
TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 86400


@dataclass(frozen=True)
class FailedItem:
    item_id: str
    name: str  # path inside the inbox it came from (may name a patient: shown to admins only)
    reason: str
    at: str  # ISO 8601 UTC, when it was (last) quarantined
    origin: str  # "inbox", "retry:<user>", ...
    size: int  # bytes of the file
    kind: str = "file"  # "file", or "symlink" (nothing was read: no content)


class _ChunkReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks (to re-seal an item without holding it)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._left:
            self._left = next(self._chunks, b"")
            if not self._left:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class Quarantine:
    def __init__(self, root: Path, keyring, chunk_size: int = 1 << 20):
        self.root = Path(root)
        self.keyring = keyring
        self.chunk_size = chunk_size

    # -- writing -----------------------------------------------------------
    def put(self, src: BinaryIO | None, name: str, reason: str, origin: str = "inbox",
            kind: str = "file") -> FailedItem:
        """Seal ``src`` (read to its end; None for no content) with its name and reason; durable on return."""
        item_id = secrets.token_hex(16)
        return self._write(item_id, src, name, reason, origin, kind)

    def update_reason(self, item_id: str, reason: str, origin: str) -> FailedItem:
        """Re-seal an item with a new reason (a retry that failed again); same id, atomically."""
        old = self.get(item_id)
        chunks = self.iter_content(item_id)
        try:
            return self._write(item_id, _ChunkReader(chunks), old.name, reason, origin, old.kind, old.size)
        finally:
            chunks.close()

    def delete(self, item_id: str) -> None:
        path = self._path(item_id)
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound(f"no failed import {item_id}") from None
        fsync_dir(self.root)

    def _write(self, item_id: str, src: BinaryIO | None, name: str, reason: str, origin: str,
               kind: str, size: int | None = None) -> FailedItem:
        private_dir(self.root)
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        content = src if src is not None else io.BytesIO(b"")
        size = _size_of(content) if size is None else size
        meta = FailedItem(item_id, name, reason, stamp, origin, size, kind)
        head = json.dumps(asdict(meta)).encode("utf-8")
        stream = io.BufferedReader(_ChunkReader(_prefixed(MAGIC + LENGTH.pack(len(head)) + head, content)))
        key_id = self.keyring.current_archive_key
        with atomic_output(self._path(item_id), tmp=self.root / f"{TMP_PREFIX}{item_id}") as fh:
            envelope.seal(stream, fh, _binding(item_id), key_id, self.keyring.archive_key(key_id), self.chunk_size)
        return meta

    # -- reading -----------------------------------------------------------
    def items(self) -> list[FailedItem]:
        """Every item, newest first. A damaged item is listed with the damage as its reason."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in os.scandir(self.root):
            if entry.name.startswith(TMP_PREFIX):
                self._drop_stale_tmp(entry)
            elif ITEM_ID.match(entry.name):
                try:
                    found.append(self.get(entry.name))
                except IntegrityError as exc:
                    found.append(FailedItem(entry.name, "?", f"this quarantined item is damaged: {exc}", "",
                                            "", 0, "damaged"))
                except NotFound:
                    continue
        return sorted(found, key=lambda i: (i.at, i.item_id), reverse=True)

    def get(self, item_id: str) -> FailedItem:
        chunks = self._chunks(item_id)
        try:
            data = b""
            for chunk in chunks:
                data += chunk
                if len(data) >= len(MAGIC) + LENGTH.size:
                    need = len(MAGIC) + LENGTH.size + LENGTH.unpack_from(data, len(MAGIC))[0]
                    if len(data) >= need:
                        break
            if not data.startswith(MAGIC):
                raise IntegrityError(f"failed import {item_id}: not a quarantine item")
            start = len(MAGIC) + LENGTH.size
            head = json.loads(data[start:start + LENGTH.unpack_from(data, len(MAGIC))[0]])
            return FailedItem(**head)
        except (ValueError, TypeError, struct.error):
            raise IntegrityError(f"failed import {item_id}: unreadable header") from None
        finally:
            chunks.close()

    def iter_content(self, item_id: str) -> Iterator[bytes]:
        """The file's bytes, as they were, in chunks (every tag checked)."""
        skip = None
        for chunk in self._chunks(item_id):
            if skip is None:
                skip = len(MAGIC) + LENGTH.size + LENGTH.unpack_from(chunk, len(MAGIC))[0]
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            yield chunk[skip:]
            skip = 0

    def read(self, item_id: str) -> bytes:
        return b"".join(self.iter_content(item_id))

    def _chunks(self, item_id: str) -> Iterator[bytes]:
        path = self._path(item_id)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"no failed import {item_id}") from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            yield from envelope.open_chunks(fh, size, _binding(item_id), self.keyring.archive_key,
                                            f"failed import {item_id}")

    def _path(self, item_id: str) -> Path:
        if not ITEM_ID.match(item_id or ""):
            raise NotFound(f"invalid failed import id {item_id!r} (32 hex digits, as `import failed list` shows)")
        return self.root / item_id

    @staticmethod
    def _drop_stale_tmp(entry) -> None:
        try:
            if time.time() - entry.stat().st_mtime > STALE_TMP_SECONDS:
                os.unlink(entry.path)
        except OSError:
            pass


def _binding(item_id: str) -> bytes:
    return b"quarantine:" + bytes.fromhex(item_id)


def _size_of(src: BinaryIO) -> int:
    """Bytes left in ``src``, or 0 when it cannot seek (then the listing shows no size)."""
    try:
        here = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(here)
        return end - here
    except (OSError, AttributeError, io.UnsupportedOperation):
        return 0


def _prefixed(head: bytes, src: BinaryIO) -> Iterator[bytes]:
    yield head
    yield from iter(lambda: src.read(1 << 20), b"")
