"""Offsite names, sealing of snapshots and manifests, and the manifest itself (layout in __init__.py)."""
from __future__ import annotations

import datetime
import io
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..archive import envelope
from ..archive.keys import Keyring
from ..errors import IntegrityError

CONFIG_NAME = "config"
KEYRING_NAME = "keyring.sealed"
CONFIG_DOC = {"format": "pacs-appliance-offsite", "version": 1}
MANIFEST_NAME = re.compile(r"^manifests/(\d{8}T\d{6}\.\d{6}Z)-([0-9a-f]{32})$")
SEAL_CHUNK = 1 << 20


def object_name(object_id: str) -> str:
    return f"objects/{object_id[:2]}/{object_id}"


def snapshot_name(n: str) -> str:
    return f"snapshots/{n}"


def new_run_names(now: datetime.datetime) -> tuple[str, str, str]:
    """(n, snapshot name, manifest name) for a new run."""
    n = secrets.token_hex(16)
    return n, snapshot_name(n), f"manifests/{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{n}"


def offsite_key(archive_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"pacs-appliance offsite v1").derive(
        archive_key)


def seal_blob(src: BinaryIO, dst: BinaryIO, n: str, keyring: Keyring) -> int:
    """Seal a snapshot or manifest for the offsite copy under the current archive key's offsite key."""
    kid = keyring.current_archive_key
    return envelope.seal(src, dst, bytes.fromhex(n), kid, offsite_key(keyring.archive_key(kid)), SEAL_CHUNK)


def open_blob(fh: BinaryIO, size: int, n: str, keyring: Keyring, where: str):
    """Yield the plaintext chunks of a sealed snapshot or manifest, checking every tag."""
    return envelope.open_chunks(fh, size, bytes.fromhex(n), lambda kid: offsite_key(keyring.archive_key(kid)), where)


MANIFEST_FORMAT = "pacs-appliance-manifest"


@dataclass
class Manifest:
    """A manifest as read: its header, and its objects streamed on demand (``objects()``).

    Format 2 (written since the backup streams): the plaintext is a JSON header line, then one line
    ``<object id> <bytes offsite>`` per object in object-id order, so a reader walks a million objects without
    holding them. Format 1 (older backups) was one JSON document with an ``objects`` map: still read, held whole.
    """
    created: str
    snapshot: str
    snapshot_size: int
    keyring_size: int
    count: int  # objects listed
    name: str = ""
    _lines: Callable[[], Iterator[bytes]] | None = None  # format 2: the plaintext lines again (header first)
    _held: dict[str, int] = field(default_factory=dict)  # format 1

    def objects(self) -> Iterator[tuple[str, int]]:
        """(object id, bytes offsite) of every listed object, in object-id order."""
        if self._lines is None:
            yield from sorted(self._held.items())
            return
        lines = self._lines()
        next(lines)  # the header
        for line in lines:
            yield _entry(line, self.name)


def _entry(line: bytes, where: str) -> tuple[str, int]:
    # Slicing, not a regular expression: a million lines, read twice. The blob is authenticated (every GCM tag
    # checked), so this only guards against a writer's mistake; an id that is not 32 hex digits never matches one.
    try:
        if len(line) < 34 or line[32] != 0x20:
            raise ValueError
        return line[:32].decode("ascii"), int(line[33:])
    except ValueError:
        raise IntegrityError(f"manifest {where} is not valid (a malformed object line)") from None


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def _header(doc: dict, name: str, count: int, lines=None, held=None) -> Manifest:
    return Manifest(doc["created"], doc["snapshot"]["name"], int(doc["snapshot"]["size"]),
                    int(doc["keyring"]["size"]), count, name, lines, held or {})


def parse(lines: Callable[[], Iterator[bytes]], name: str) -> Manifest:
    """A manifest from its plaintext lines (a callable, so format 2 can read them again later). Reads them all
    once: every tag checked, and format 2's lines checked (well formed, in order, as many as the header says)."""
    try:
        it = lines()
        doc = json.loads(next(it, b""))
        if doc.get("format") != MANIFEST_FORMAT or doc.get("version") not in (1, 2):
            raise ValueError("unknown manifest format")
        if doc["version"] == 1:
            held = {k: int(v) for k, v in doc["objects"].items()}
            return _header(doc, name, len(held), held=held)
        count, last = 0, ""
        for line in it:
            oid, _size = _entry(line, name)
            if oid <= last:
                raise ValueError("object lines out of order")
            count, last = count + 1, oid
        if count != int(doc["objects"]):
            raise ValueError(f"{count} object lines, the header says {doc['objects']}")
        return _header(doc, name, count, lines=lines)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"manifest {name} is not valid ({exc})") from None


class ManifestWriter:
    """A run's manifest, written to a local file as the run goes (objects in id order), sealed at the end.

    The file holds object ids and sizes only (opaque: no patient data); it lives in the backup's private work
    folder and is removed with the run's other files."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "w+b")
        os.chmod(path, 0o600)
        self.count = 0
        self._last = ""

    def add(self, object_id: str, size: int) -> None:
        if object_id <= self._last:  # the merge went wrong: never write a manifest a reader would refuse
            raise ValueError(f"manifest objects out of order: {object_id} after {self._last}")
        self._last = object_id
        self._fh.write(b"%s %d\n" % (object_id.encode(), size))
        self.count += 1

    def seal(self, dst: BinaryIO, n: str, keyring: Keyring, *, created: str, snapshot: str, snapshot_size: int,
             keyring_size: int) -> None:
        header = json.dumps({
            "format": MANIFEST_FORMAT, "version": 2, "created": created,
            "snapshot": {"name": snapshot, "size": snapshot_size},
            "keyring": {"name": KEYRING_NAME, "size": keyring_size},
            "objects": self.count,
        }, separators=(",", ":")).encode() + b"\n"
        self._fh.flush()
        self._fh.seek(0)
        seal_blob(_Joined(io.BytesIO(header), self._fh), dst, n, keyring)

    def close(self) -> None:
        self._fh.close()


class _Joined:
    """Readers read one after the other (the header, then the object lines on disk)."""

    def __init__(self, *parts: BinaryIO):
        self._parts = list(parts)

    def read(self, size: int = -1) -> bytes:
        while self._parts:
            data = self._parts[0].read(size)
            if data:
                return data
            self._parts.pop(0)
        return b""


def object_listing(target) -> Iterator[tuple[str, int]]:
    """(object id, bytes) of every object on the target, in id order, as the target lists them (lazily)."""
    last = ""
    for name, size in target.list("objects"):
        oid = name.rsplit("/", 1)[-1]
        if name != object_name(oid):
            continue  # not an object of this layout
        if oid <= last:  # a merge over an unsorted listing would judge wrongly: refuse, never guess
            raise ValueError(f"{target.url} listed {name} after objects/../{last}: targets list in name order")
        last = oid
        yield oid, size


def manifest_names(target) -> list[str]:
    """Names of the manifests on the target, oldest first."""
    return sorted(name for name, _size in target.list("manifests") if MANIFEST_NAME.match(name))


def read_manifest(target, name: str, keyring: Keyring) -> Manifest:
    n = MANIFEST_NAME.match(name).group(2)
    size = target.size(name)
    if size is None:
        raise FileNotFoundError(name)

    def lines() -> Iterator[bytes]:
        with target.open(name) as fh:
            yield from _split_lines(open_blob(fh, size, n, keyring, name))

    return parse(lines, name)


def latest_manifest(target, keyring: Keyring, on_skip: Callable[[str, Exception], None] | None = None) -> Manifest:
    """The newest manifest that opens; a damaged newer one is reported through ``on_skip`` and passed over."""
    names = manifest_names(target)
    for name in reversed(names):
        try:
            return read_manifest(target, name, keyring)
        except (IntegrityError, FileNotFoundError) as exc:
            if on_skip:
                on_skip(name, exc)
    raise IntegrityError(f"no readable manifest on {target.url}: " + (
        "every manifest failed its check" if names else "it holds no backup (was a backup ever completed?)"))
