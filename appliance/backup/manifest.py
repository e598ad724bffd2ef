"""Offsite names, sealing of snapshots and manifests, and the manifest itself (layout in __init__.py)."""
from __future__ import annotations

import datetime
import io
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

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


@dataclass
class Manifest:
    created: str
    snapshot: str
    snapshot_size: int
    keyring_size: int
    objects: dict[str, int] = field(default_factory=dict)
    name: str = ""  # where it was read from

    def to_json(self) -> bytes:
        return json.dumps({
            "format": "pacs-appliance-manifest", "version": 1, "created": self.created,
            "snapshot": {"name": self.snapshot, "size": self.snapshot_size},
            "keyring": {"name": KEYRING_NAME, "size": self.keyring_size},
            "objects": self.objects,
        }, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, name: str) -> "Manifest":
        try:
            doc = json.loads(data)
            if doc.get("format") != "pacs-appliance-manifest" or doc.get("version") != 1:
                raise ValueError("unknown manifest format")
            return cls(doc["created"], doc["snapshot"]["name"], int(doc["snapshot"]["size"]),
                       int(doc["keyring"]["size"]), {k: int(v) for k, v in doc["objects"].items()}, name)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"manifest {name} is not valid ({exc})") from None

    def seal(self, n: str, keyring: Keyring) -> bytes:
        out = io.BytesIO()
        seal_blob(io.BytesIO(self.to_json()), out, n, keyring)
        return out.getvalue()


def manifest_names(target) -> list[str]:
    """Names of the manifests on the target, oldest first."""
    return sorted(name for name, _size in target.list("manifests") if MANIFEST_NAME.match(name))


def read_manifest(target, name: str, keyring: Keyring) -> Manifest:
    n = MANIFEST_NAME.match(name).group(2)
    size = target.size(name)
    if size is None:
        raise FileNotFoundError(name)
    with target.open(name) as fh:
        data = b"".join(open_blob(fh, size, n, keyring, name))
    return Manifest.from_json(data, name)


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
