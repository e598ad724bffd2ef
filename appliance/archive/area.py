"""What the rest of the appliance may do with the archive: the storage-area interface.

Modelled on Orthanc's ``IStorageArea``: callers name objects by their object id
and never see where or how an object lies on the disk. ``store.Archive`` is the
file implementation; its layout (directories, fan-out, temp and staging folders)
is private to ``appliance/archive`` (tests/architecture/test_archive_seam.py
holds every other module to that).

Two kinds of bytes cross the interface:

- plaintext, checked: ``iter_chunks``/``read``/``copy_to``/``verify`` decrypt and
  check every GCM tag (``IntegrityError`` on damage, ``NotFound`` when absent);
- sealed, as stored: ``open_sealed``/``sealed_size`` for the offsite backup, which
  copies objects byte for byte, and ``Staging.receive`` + ``adopt`` for the way
  back (a restore): a sealed object is received into a staging folder, fsynced,
  every tag checked, and only then moved in under its own id.
"""
from __future__ import annotations

from typing import BinaryIO, Iterable, Iterator, Protocol

from .keys import Keyring


class Staging(Protocol):
    """A folder of sealed objects from elsewhere, each checked, waiting to be adopted."""

    def receive(self, object_id: str, src: BinaryIO) -> int:
        """Copy ``src`` (a sealed object, read to its end) in, fsync it and check every tag; return its size.

        Raises IntegrityError (and keeps nothing) if any tag fails."""

    def read(self, object_id: str) -> bytes:
        """The plaintext of a received object."""

    def ids(self) -> list[str]:
        """Object ids waiting here."""

    def clear(self) -> int:
        """Drop everything waiting here (downloads cut short); return how many."""


class StorageArea(Protocol):
    keyring: Keyring

    # -- writing -----------------------------------------------------------
    def put(self, src: BinaryIO, object_id: str | None = None):
        """Seal ``src`` into a new durable object; returns a StoredObject (id, plaintext size, SHA-256)."""

    def put_bytes(self, data: bytes):
        ...

    def new_object_id(self) -> str:
        ...

    def delete(self, object_id: str) -> None:
        """Remove one object, durably (a missing object is not an error)."""

    def delete_many(self, object_ids: Iterable[str]) -> int:
        """Remove many objects, durably, syncing each directory once; return how many were there."""

    # -- reading -----------------------------------------------------------
    def exists(self, object_id: str) -> bool:
        ...

    def iter_chunks(self, object_id: str) -> Iterator[bytes]:
        """The plaintext in bounded chunks, every tag checked."""

    def read(self, object_id: str) -> bytes:
        ...

    def copy_to(self, object_id: str, dst: BinaryIO) -> int:
        ...

    def verify(self, object_id: str, expected_sha256: str | None = None) -> str:
        """Check every tag (and the digest if given); return the plaintext SHA-256."""

    def list_ids(self) -> Iterator[str]:
        """Every object id, in order."""

    def open_sealed(self, object_id: str) -> BinaryIO:
        """The object as stored (sealed), for a byte-for-byte copy offsite; NotFound if absent."""

    def sealed_size(self, object_id: str) -> int | None:
        """Bytes the object takes as stored, or None if absent."""

    # -- objects from elsewhere, and objects put aside ------------------------
    def staging(self, name: str) -> Staging:
        """A named staging folder on the archive's file system (so ``adopt`` is a rename)."""

    def adopt(self, staging: Staging, object_id: str) -> None:
        """Move a received (checked) object in under its own id; durable after ``sync_adopted``."""

    def sync_adopted(self, object_ids: Iterable[str]) -> None:
        """Make the adoption of these objects durable (one directory sync each, not one per object)."""

    def quarantine_orphans(self, object_ids: Iterable[str]) -> str:
        """Move objects no index row names out of the archive, kept whole and readable under their ids
        (reconciliation's orphans); say where to. (Failed imports have their own sealed quarantine.)"""

    def quarantine(self):
        """The sealed quarantine of failed imports (archive/quarantine.py: put, items, delete ...)."""

    def written_at(self, object_id: str) -> float:
        """When the object was written (seconds since the epoch): the order of arrival."""

    def clock(self) -> float:
        """What ``written_at`` would say of an object written now (the storage's own clock): an object
        written later never reads as earlier than this."""

    def has_objects(self) -> bool:
        """True if at least one object is stored."""

    # snapshots: a SnapshotShelf of sealed index copies (snapshots.py), kept beside the objects

    # -- the disk -------------------------------------------------------------
    def disk_free_bytes(self) -> int:
        ...

    def create_dirs(self) -> None:
        ...

    def clean_tmp(self) -> int:
        """Remove half-written objects left by a crash; return how many."""
