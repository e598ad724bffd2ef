"""What every offsite target is: the interface, its errors, names, exact-size uploads, the throttle.

A target stores opaque blobs under slash-separated names (the layout is in
backup/__init__.py). The contract, checked for every target by
tests/backup/test_target_contract.py:

- ``put(name, src, size)`` stores exactly ``size`` bytes read from ``src`` and is
  atomic: a reader sees no blob (or the previous one) until the whole new blob
  is there under its final name. A source that ends early or runs long is an
  error and leaves nothing new behind. ``put`` never closes ``src``.
- ``open(name)`` returns a readable stream; a missing blob is ``FileNotFoundError``.
- ``size(name)`` is the stored size, or None when there is no such blob.
- ``list(prefix)`` yields ``(name, size)`` for every blob under ``prefix/`` at any
  depth ("" = everything), never uploads in progress; order is unspecified.
- ``delete(name)`` removes a blob; deleting a missing one is not an error.
- ``close()`` releases connections.
- Failures of the target itself (unreachable, refused, full) are ``TargetError``
  with a message that says what to check; bad settings are ``ConfigError``.

A scheme module also gives its class two class-level hooks for the registry:
``parse_url(url)`` (syntax only, no I/O; ConfigError when wrong) and
``from_url(url, options)`` (open it, reading only the options it declares in
``OPTIONS``).
"""
from __future__ import annotations

import io
import threading
import time
from typing import Any, BinaryIO, Iterator, Mapping, Protocol

from ...errors import ApplianceError

COPY_BLOCK = 256 * 1024
TEMP_PREFIX = ".tmp-"  # uploads in progress; never listed, never a valid name


class TargetError(ApplianceError):
    """The offsite target cannot be reached or refused an operation."""

    exit_code = 5


class Target(Protocol):
    url: str  # printable, without credentials

    def put(self, name: str, src: BinaryIO, size: int) -> None: ...
    def open(self, name: str) -> BinaryIO: ...  # raises FileNotFoundError
    def size(self, name: str) -> int | None: ...
    # (name, size) of blobs under prefix/, lazily, in name order (a folder's files before its subfolders):
    # the backup merges the objects/ listing with sorted id streams (manifest.object_listing).
    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...
    def delete(self, name: str) -> None: ...
    def close(self) -> None: ...


class TargetClass(Protocol):
    """What the registry needs from a scheme's class."""

    SCHEMES: tuple[str, ...]
    OPTIONS: tuple[str, ...]  # the keyword options (named like the [backup] settings) it reads
    EXAMPLE: str  # the URL form, for messages

    @classmethod
    def parse_url(cls, url: str) -> Any: ...
    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Target: ...


def check_name(name: str, *, prefix: bool = False) -> str:
    """Refuse a name that could leave the target's root or collide with temp files (before any path is built).

    ``prefix`` (for ``list``) also allows "" (the whole target) and a trailing slash, which it drops.
    """
    if prefix:
        name = name.rstrip("/")
        if name == "":
            return name
    parts = name.split("/")
    if (not name or "\\" in name or "\0" in name
            or any(p in ("", ".", "..") or p.startswith(TEMP_PREFIX) for p in parts)):
        raise ValueError(f"invalid offsite name {name!r}: relative slash-separated parts, no '.', '..' or "
                         f"'{TEMP_PREFIX}' parts")
    return name


class _BlockReader(io.RawIOBase):
    """A readable over ``src`` whose ``read(n)`` returns exactly ``n`` bytes unless the end comes first
    (boto3 takes a short read for the end); subclasses see every block passing and the end."""

    def __init__(self, src: BinaryIO):
        self.src = src

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        parts, want = [], (1 << 62) if n is None or n < 0 else n
        while want:
            data = self.src.read(min(want, COPY_BLOCK))
            if not data:
                self._ended()
                break
            self._passed(data)
            parts.append(data)
            want -= len(data)
        return b"".join(parts)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _passed(self, data: bytes) -> None:
        pass

    def _ended(self) -> None:
        pass


class ExactReader(_BlockReader):
    """Passes ``src`` through and fails the upload unless it yields exactly ``size`` bytes.

    Raising inside the read (rather than checking afterwards) means the target never
    finishes, renames or completes a short or overlong blob.
    """

    def __init__(self, src: BinaryIO, size: int, name: str):
        super().__init__(src)
        self.size, self.name, self.count = size, name, 0

    def _passed(self, data: bytes) -> None:
        self.count += len(data)
        if self.count > self.size:
            raise TargetError(f"{self.name}: the source holds more than the {self.size} bytes announced")

    def _ended(self) -> None:
        if self.count < self.size:
            raise TargetError(f"{self.name}: the source ended after {self.count} of {self.size} bytes")

    def close(self) -> None:  # the caller owns src; boto3 closes what it is given
        pass


def copy_exact(src: BinaryIO, dst, size: int, name: str) -> None:
    """Copy exactly ``size`` bytes of ``src`` into ``dst`` (TargetError otherwise)."""
    reader = ExactReader(src, size, name)
    while True:
        block = reader.read(COPY_BLOCK)
        if not block:
            return
        dst.write(block)


class Throttle:
    """A token bucket shared by all uploads: at most ``rate`` bytes/s on average (0 = no cap)."""

    def __init__(self, rate: int):
        self.rate = rate
        self._lock = threading.Lock()
        self._allowance = float(rate)
        self._last = time.monotonic()

    def consume(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._allowance = min(self.rate, self._allowance + (now - self._last) * self.rate) - n
            self._last = now
            wait = -self._allowance / self.rate if self._allowance < 0 else 0.0
        if wait:
            time.sleep(wait)


class ThrottledReader(_BlockReader):
    """Wraps a readable so every byte read passes through a Throttle and a byte counter."""

    def __init__(self, src: BinaryIO, throttle: Throttle | None, on_bytes=None):
        super().__init__(src)
        self.throttle, self.on_bytes = throttle, on_bytes

    def _passed(self, data: bytes) -> None:
        if self.throttle:
            self.throttle.consume(len(data))
        if self.on_bytes:
            self.on_bytes(len(data))
