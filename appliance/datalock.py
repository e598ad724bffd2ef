"""Who holds the data directory: ``serve``, or an offline command that rewrites the index.

``serve`` holds ``data.lock`` (flock, exclusive) for as long as it runs; ``index rebuild`` takes the same
lock and refuses while ``serve`` has it, naming the process (and ``serve`` refuses while a rebuild runs).
The holder writes its pid and what it is into the file, so the refusal can say who; the kernel releases
the lock when the process ends, however it ends (kill -9 included), so a stale file never blocks.
CLI commands that share the index with a running server (user, correct, import ...) do not take it.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import ApplianceError

LOCK_NAME = "data.lock"


class DataDirBusy(ApplianceError):
    exit_code = 75  # EX_TEMPFAIL: try again once the other process has finished


def hold(data_dir: Path, what: str) -> int:
    """Take the data directory for ``what`` ("serve", "index rebuild"); returns the descriptor to keep open
    (closing it, or the process ending, releases it). Raises DataDirBusy naming the holder."""
    path = Path(data_dir) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise DataDirBusy(f"the data directory {data_dir} is in use by {holder}: {what} cannot run meanwhile"
                          + (" (stop the service first: systemctl stop pacs-appliance)" if "serve" in holder
                             else "; wait for it to finish")) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} ({what})\n".encode(), 0)
    return fd
