"""Handing images to the patient: a study as a ZIP of DICOM files, or as DICOMDIR media.

The media ZIP unpacks to a folder ready to burn to a CD or copy to a USB stick:
a ``DICOMDIR`` at the top and the files in a PT000000/ST000000/SE000000/IM000000
tree of ISO 9660-safe names (PS3.10, PS3.11), built with pydicom's FileSet. pydicom's FileSet needs real files, so the study is staged in a
memory-backed temporary directory (``/dev/shm``) — never on the data disk in
the clear — and removed as soon as the ZIP is built.

A process killed while exporting cannot remove its staging folder, and /dev/shm
keeps it (plaintext DICOM) until reboot. So each export holds an exclusive flock
on ``.lock`` inside its folder, and ``sweep_stale`` - run when the web app is
created (start-up) and before each export - removes every ``pacs-media-*``
folder whose lock nobody holds: the kernel drops the lock when its holder dies,
so a live export is never touched. Folders of the older lock-less layout
(``pacs-media-*`` and ``pacs-stage-*``) are removed once they are
``LEGACY_GRACE_SECONDS`` old.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import pydicom
from pydicom.fileset import FileSet

from appliance.errors import ApplianceError

log = logging.getLogger(__name__)
MEMORY_DIR = "/dev/shm"
PREFIX = "pacs-media-"
LEGACY_PREFIXES = (PREFIX, "pacs-stage-")
LOCK_NAME = ".lock"
LEGACY_GRACE_SECONDS = 600


class ExportError(ApplianceError):
    http_status = 422


class _Sink(io.RawIOBase):
    """A write-only stream whose written bytes are collected for a streaming response."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def stream_zip(archive, objects: Iterable[tuple[str, str]]) -> Iterator[bytes]:
    """Yield a ZIP of ``(name, object_id)`` pairs, one archive object in memory at a time."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, object_id in objects:
            with zf.open(name, "w", force_zip64=True) as entry:
                for chunk in archive.iter_chunks(object_id):
                    entry.write(chunk)
                    if len(sink.parts) > 16:
                        yield sink.take()
            yield sink.take()
    yield sink.take()


def _staging_dir(base: str) -> str | None:
    return base if os.path.isdir(base) and os.access(base, os.W_OK) else None


def sweep_stale(base: str | None = None) -> int:
    """Remove staging folders left in ``base`` (default /dev/shm) by exports that died; return how many."""
    base = base or MEMORY_DIR
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(LEGACY_PREFIXES):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            if _abandoned(Path(entry.path)):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        except OSError:
            continue  # removed meanwhile by its owner
    if removed:
        log.warning("removed %d media export staging folder(s) left in %s by an export that was interrupted",
                    removed, base)
    return removed


def _abandoned(folder: Path) -> bool:
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:  # older layout without a lock: only by age
        return time.time() - folder.stat().st_mtime > LEGACY_GRACE_SECONDS
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False  # an export is running
    finally:
        os.close(fd)


@contextlib.contextmanager
def _staging(base: str):
    """A private folder in ``base``, locked by this export until it is removed."""
    folder = Path(tempfile.mkdtemp(dir=base, prefix=PREFIX))  # 0700
    fd = None
    try:
        fd = os.open(folder / LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # before the lock goes, so no sweeper races us
        if fd is not None:
            os.close(fd)


def media_zip(archive, object_ids: list[str], label: str = "PACS", staging_base: str | None = None) -> bytes:
    """A ZIP holding DICOMDIR + DICOM/... for the given archive objects."""
    staging = _staging_dir(staging_base or MEMORY_DIR)
    if staging is None:
        raise ExportError("media export needs a memory-backed /dev/shm to stage files; none is available")
    sweep_stale(staging)
    with _staging(staging) as folder:
        out = folder / "out"
        fs = FileSet()
        # FileSet stages added instances in the system temp dir; keep that in memory too, inside the
        # locked folder. (pydicom has no public option for it; tests/viewer covers this use.)
        fs._stage["t"].cleanup()
        fs._stage["t"] = tempfile.TemporaryDirectory(dir=folder, prefix="stage-")
        fs._stage["path"] = Path(fs._stage["t"].name)
        fs.ID = label[:16]
        try:
            for object_id in object_ids:
                try:
                    fs.add(pydicom.dcmread(io.BytesIO(archive.read(object_id))))
                except (ValueError, KeyError, AttributeError) as exc:
                    raise ExportError(f"an instance cannot go on DICOM media: {exc}") from None
            fs.write(str(out), use_existing=False)
        finally:
            fs._stage["t"].cleanup()
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(out.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(out).as_posix())
        return buf.getvalue()
