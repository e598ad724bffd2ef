"""glibc malloc settings for a long-running server, so its resident size levels off.

Measured in the 25-minute soak (bench/README.md, "Memory over a 25-minute soak"): with glibc's
defaults the heap held ~76 MiB free beside ~136 MiB in use, and RSS kept climbing. Three causes:
- threads get arenas of their own (up to 8 per core) and memory freed in one is not reused by another;
- the mmap threshold is dynamic: once a large block (a received object, a decrypted frame) is freed,
  glibc raises the threshold up to 32 MiB, so later objects of that size come from the heap, where
  they fragment it instead of going back to the system when freed;
- freed memory at the top of a heap is returned only past the trim threshold, and memory inside a
  heap never, unless ``malloc_trim`` is called.
Without glibc (musl, macOS) every function here does nothing and says so by returning False.

``tune`` must run before the process starts any thread: a thread that allocated before it keeps the
arena it was given (session 6's soak found six arenas in a server that asked for one, because
``serve`` tuned after ``build`` had started its threads).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import tempfile

ARENAS = 1  # the GIL serialises most allocations anyway; a second arena held ~20 MiB more in the soak
MMAP_THRESHOLD = 256 << 10  # blocks this large (DICOM objects, frames, PDUs) are mapped, and unmapped when freed
TRIM_INTERVAL_S = 60.0  # how often serve() hands free heap pages back (malloc_trim)

# mallopt parameters (glibc malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018  (AttributeError where this is not glibc)
        libc.malloc_trim
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def tune(arenas: int = ARENAS, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """At most ``arenas`` arenas for threads started from now on, and a fixed mmap threshold."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, arenas)) and bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))


def trim() -> bool:
    """Give free pages of every arena back to the system; True if any memory was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def arenas() -> int | None:
    """How many malloc arenas the process has (from ``malloc_info``); None without glibc."""
    if _LIBC is None or not hasattr(_LIBC, "malloc_info"):
        return None
    _LIBC.fopen.restype = ctypes.c_void_p
    _LIBC.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    _LIBC.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    _LIBC.fclose.argtypes = [ctypes.c_void_p]
    fd, path = tempfile.mkstemp(prefix="malloc-info-")
    try:
        os.close(fd)
        stream = _LIBC.fopen(os.fsencode(path), b"w")
        if not stream:
            return None
        try:
            _LIBC.malloc_info(0, stream)
        finally:
            _LIBC.fclose(stream)
        with open(path) as fh:
            return len(re.findall(r"<heap nr=", fh.read()))
    finally:
        os.unlink(path)
