"""The key store: archive keys, the index key and the recovery key.

Files in ``<data dir>/keys/`` (directory 0700, files 0600):

``keyring.json``
    ``{"version": 1, "archive_keys": {"<key id>": "<base64 32 bytes>", ...},
    "current_archive_key": "<key id>", "index_key": "<base64 32 bytes>"}``.
    A key id is 8 hex digits; every archive object names the key that sealed
    it, so old keys keep opening old objects after a rotation.
``recovery.key``
    The recovery key, 32 random bytes written as groups of base32. It is shown
    once at ``init`` and is the only thing needed, with an offsite copy, to
    open the archive on a new box.
``keyring.sealed``
    The keyring encrypted with the recovery key (see ``seal_keyring``). It goes
    offsite with the backup; without the recovery key it is useless.

Keys never appear in logs or error messages.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import DataDirError, KeyStoreError
from .fsutil import write_file_atomic

KEYRING_FILE = "keyring.json"
RECOVERY_FILE = "recovery.key"
SEALED_FILE = "keyring.sealed"
SEALED_MAGIC = b"PACSKEYS1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass
class Keyring:
    archive_keys: dict[str, bytes]
    current_archive_key: str
    index_key: bytes
    extra: dict[str, str] = field(default_factory=dict)  # other named secrets (e.g. web session key)

    @classmethod
    def generate(cls) -> "Keyring":
        key_id = secrets.token_hex(4)
        return cls(
            archive_keys={key_id: AESGCM.generate_key(256)},
            current_archive_key=key_id,
            index_key=secrets.token_bytes(32),
        )

    def archive_key(self, key_id: str) -> bytes:
        try:
            return self.archive_keys[key_id]
        except KeyError:
            raise KeyStoreError(
                f"archive key {key_id} is not in the keyring: the object was sealed with a key this box "
                "does not have (restore the keyring with the recovery key)"
            ) from None

    def rotate(self) -> str:
        """Add a new archive key and make it current; old keys stay for reading."""
        key_id = secrets.token_hex(4)
        while key_id in self.archive_keys:
            key_id = secrets.token_hex(4)
        self.archive_keys[key_id] = AESGCM.generate_key(256)
        self.current_archive_key = key_id
        return key_id

    def to_json(self) -> bytes:
        doc = {
            "version": 1,
            "archive_keys": {k: _b64(v) for k, v in self.archive_keys.items()},
            "current_archive_key": self.current_archive_key,
            "index_key": _b64(self.index_key),
            "extra": self.extra,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Keyring":
        try:
            doc = json.loads(data)
            if doc.get("version") != 1:
                raise ValueError("unsupported keyring version")
            return cls(
                archive_keys={k: _unb64(v) for k, v in doc["archive_keys"].items()},
                current_archive_key=doc["current_archive_key"],
                index_key=_unb64(doc["index_key"]),
                extra=dict(doc.get("extra", {})),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"{where} is not a valid keyring ({exc.__class__.__name__})") from None


def format_recovery_key(raw: bytes) -> str:
    text = base64.b32encode(raw).decode("ascii").rstrip("=")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_recovery_key(text: str) -> bytes:
    compact = "".join(ch for ch in text.strip().upper() if ch.isalnum())
    try:
        raw = base64.b32decode(compact + "=" * (-len(compact) % 8))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyStoreError("that is not a recovery key: expected 13 groups of letters and digits, as printed at init")
    return raw


def _wrapping_key(recovery_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"pacs-appliance keyring wrap v1").derive(
        recovery_key
    )


def seal_keyring(keyring: Keyring, recovery_key: bytes) -> bytes:
    """MAGIC | 12-byte nonce | AES-256-GCM(keyring JSON), with MAGIC as associated data."""
    nonce = os.urandom(12)
    return SEALED_MAGIC + nonce + AESGCM(_wrapping_key(recovery_key)).encrypt(nonce, keyring.to_json(), SEALED_MAGIC)


def unseal_keyring(sealed: bytes, recovery_key: bytes) -> Keyring:
    if not sealed.startswith(SEALED_MAGIC):
        raise KeyStoreError("the sealed keyring is not in a known format")
    nonce = sealed[len(SEALED_MAGIC) : len(SEALED_MAGIC) + 12]
    body = sealed[len(SEALED_MAGIC) + 12 :]
    try:
        plain = AESGCM(_wrapping_key(recovery_key)).decrypt(nonce, body, SEALED_MAGIC)
    except InvalidTag:
        raise KeyStoreError("the recovery key does not open this keyring (wrong key, or the copy is damaged)") from None
    return Keyring.from_json(plain, "the sealed keyring")


class KeyStore:
    """Reads and writes the key files of one data directory."""

    def __init__(self, keys_dir: Path):
        self.dir = Path(keys_dir)

    def exists(self) -> bool:
        return (self.dir / KEYRING_FILE).exists()

    def create(self, keyring: Keyring | None = None, recovery_key: bytes | None = None) -> tuple[Keyring, bytes]:
        """Write a new keyring and recovery key; refuse to overwrite existing keys."""
        if self.exists() or (self.dir / RECOVERY_FILE).exists():
            raise DataDirError(f"{self.dir} already holds keys; refusing to overwrite them")
        keyring = keyring or Keyring.generate()
        recovery_key = recovery_key or secrets.token_bytes(32)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        write_file_atomic(self.dir / RECOVERY_FILE, (format_recovery_key(recovery_key) + "\n").encode(), mode=0o600)
        self.save(keyring, recovery_key)
        return keyring, recovery_key

    def save(self, keyring: Keyring, recovery_key: bytes | None = None) -> None:
        recovery_key = recovery_key or self.recovery_key()
        write_file_atomic(self.dir / SEALED_FILE, seal_keyring(keyring, recovery_key), mode=0o600)
        write_file_atomic(self.dir / KEYRING_FILE, keyring.to_json(), mode=0o600)

    def load(self) -> Keyring:
        path = self.dir / KEYRING_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(f"no keyring at {path}: run `pacs-appliance init` first") from None
        except PermissionError:
            raise KeyStoreError(f"cannot read {path}: run as the appliance's user") from None
        return Keyring.from_json(data, str(path))

    def recovery_key(self) -> bytes:
        path = self.dir / RECOVERY_FILE
        try:
            return parse_recovery_key(path.read_text(encoding="ascii"))
        except FileNotFoundError:
            raise KeyStoreError(f"no recovery key at {path}") from None

    def sealed_keyring(self) -> bytes:
        return (self.dir / SEALED_FILE).read_bytes()
