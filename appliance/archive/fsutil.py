"""Durable file writes (temp file, fsync, rename, fsync the directory) and private modes.

Modes are set explicitly (chmod after create), never left to the umask: an admin's shell
(umask 022) would otherwise make the index, the config or archive folders world-readable.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


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


def write_file_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
