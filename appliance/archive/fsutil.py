"""Durable file writes (temp file, fsync, rename, fsync the directory) and private modes.

Modes are set explicitly (chmod after create), never left to the umask: an admin's shell
(umask 022) would otherwise make the index, the config or archive folders world-readable.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import BinaryIO, Iterator


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents 0700 (an existing parent keeps its mode); return it."""
    target = path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            pass  # made meanwhile by another thread or process: still make it private below
        os.chmod(directory, PRIVATE_DIR)
    return target


def make_private(path: Path, mode: int = PRIVATE_FILE) -> None:
    """Take group and other permissions away from an existing file or folder (a box set up before
    modes were enforced); leave it alone if it is already private enough."""
    current = os.stat(path).st_mode & 0o777
    if current & 0o077:
        os.chmod(path, current & mode)


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = PRIVATE_FILE, tmp: Path | None = None) -> Iterator[BinaryIO]:
    """Write ``path`` through a binary file so a crash leaves the old file or the whole new one, never
    half of one: the body writes a temp file (``tmp``, default a hidden name beside ``path``), which is
    then fsynced, given ``mode``, renamed over ``path``, and the directory fsynced. An error in the
    body removes the temp file and leaves ``path`` as it was."""
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 16) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_file_atomic(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Replace ``path`` with ``data`` (see atomic_output)."""
    with atomic_output(path, mode) as fh:
        fh.write(data)


def try_lock(path: Path) -> int | None:
    """An exclusive lock on ``path`` (created 0600) as an open descriptor, or None while another
    process (or descriptor) holds it. Closing the descriptor, or the process ending, releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def claim_abandoned(path: Path) -> Iterator[bool]:
    """True, holding its lock for the body, when no live process holds ``path``'s flock (its writer
    died: the kernel drops a dead process's locks); False while one does, or when ``path`` is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        yield False
        return
    try:
        yield True
    finally:
        os.close(fd)
