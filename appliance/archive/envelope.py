"""The on-disk format of one archive object (version 1).

An object is a DICOM file (bytes exactly as received) sealed with AES-256-GCM
in fixed-size chunks, so neither writing nor reading needs more memory than one
chunk, whatever the object's size.

Header (29 bytes)::

    offset size  field
    0      8     magic  b"PACSOBJ\\0"
    8      1     format version, 1
    9      8     archive key id, 8 ASCII hex digits (names the key in the keyring)
    17     4     chunk size: plaintext bytes per full chunk, unsigned big-endian
    21     8     nonce prefix, random per object

Then the chunks, each ``AES-256-GCM ciphertext || 16-byte tag``:

- every chunk but the last holds exactly ``chunk size`` plaintext bytes; the
  last holds fewer (possibly zero), so a file always ends with a final chunk
  and the chunk boundaries follow from the file size alone;
- nonce of chunk i = nonce prefix (8 bytes) || i (4 bytes, big-endian);
- associated data of chunk i = header (29 bytes) || object id (16 bytes) ||
  i (8 bytes, big-endian) || 1 if final else 0 (1 byte).

Binding the object id (its file name) into every tag means two objects cannot be
swapped, a chunk cannot be moved, and truncation or extension is detected.
"""
from __future__ import annotations

import os
import re
import struct
from typing import BinaryIO, Callable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import IntegrityError

OBJECT_ID = re.compile(r"^[0-9a-f]{32}$")  # 16 random bytes in hex; bound into every tag
MAGIC = b"PACSOBJ\0"
VERSION = 1
HEADER = struct.Struct(">8sB8sI8s")
HEADER_SIZE = HEADER.size  # 29
TAG_SIZE = 16
SUPPORTED_VERSIONS = (1,)


def _aad(header: bytes, object_id: bytes, index: int, final: bool) -> bytes:
    return header + object_id + struct.pack(">QB", index, 1 if final else 0)


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def seal(src: BinaryIO, dst: BinaryIO, object_id: bytes, key_id: str, key: bytes, chunk_size: int,
         on_plaintext: Callable[[bytes], None] | None = None) -> int:
    """Encrypt ``src`` into ``dst``; return the plaintext size."""
    prefix = os.urandom(8)
    header = HEADER.pack(MAGIC, VERSION, key_id.encode("ascii"), chunk_size, prefix)
    dst.write(header)
    aead = AESGCM(key)
    index = 0
    total = 0
    chunk = _read_full(src, chunk_size)
    while True:
        # A short (or empty) chunk is the final one; a full chunk never is, so a
        # plaintext of exactly k chunks ends with an empty final chunk.
        final = len(chunk) < chunk_size
        if on_plaintext:
            on_plaintext(chunk)
        dst.write(aead.encrypt(_nonce(prefix, index), chunk, _aad(header, object_id, index, final)))
        total += len(chunk)
        index += 1
        if final:
            return total
        chunk = _read_full(src, chunk_size)


def _read_full(src: BinaryIO, size: int) -> bytes:
    parts = []
    remaining = size
    while remaining:
        data = src.read(remaining)
        if not data:
            break
        parts.append(data)
        remaining -= len(data)
    return b"".join(parts)


def read_header(fh: BinaryIO, where: str) -> tuple[bytes, str, int, bytes]:
    header = fh.read(HEADER_SIZE)
    if len(header) != HEADER_SIZE:
        raise IntegrityError(f"{where}: object is truncated (no complete header)")
    magic, version, key_id, chunk_size, prefix = HEADER.unpack(header)
    if magic != MAGIC:
        raise IntegrityError(f"{where}: not an archive object (bad magic)")
    if version not in SUPPORTED_VERSIONS:
        raise IntegrityError(f"{where}: unsupported object format version {version}")
    if chunk_size <= 0:
        raise IntegrityError(f"{where}: invalid chunk size")
    return header, key_id.decode("ascii", "replace"), chunk_size, prefix


def open_chunks(fh: BinaryIO, file_size: int, object_id: bytes, key_for: Callable[[str], bytes],
                where: str) -> Iterator[bytes]:
    """Yield the plaintext chunks of a sealed object, checking every tag."""
    header, key_id, chunk_size, prefix = read_header(fh, where)
    aead = AESGCM(key_for(key_id))
    body = file_size - HEADER_SIZE
    full = chunk_size + TAG_SIZE
    n_full, last = divmod(body, full)
    if last < TAG_SIZE:
        raise IntegrityError(f"{where}: object is truncated or damaged (bad length)")
    for index in range(n_full + 1):
        final = index == n_full
        sealed = fh.read(last if final else full)
        try:
            yield aead.decrypt(_nonce(prefix, index), sealed, _aad(header, object_id, index, final))
        except InvalidTag:
            raise IntegrityError(
                f"{where}: authentication failed at chunk {index}: the object is damaged or was tampered with"
            ) from None
