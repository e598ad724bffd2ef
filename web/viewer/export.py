"""Handing images to the patient: a study as a ZIP of DICOM files, or as DICOMDIR media.

The media ZIP unpacks to a folder ready to burn to a CD or copy to a USB stick:
a ``DICOMDIR`` at the top and the files in a PT000000/ST000000/SE000000/IM000000
tree of ISO 9660-safe names (PS3.10, PS3.11), built with pydicom's FileSet. pydicom's FileSet needs real files, so the study is staged in a
memory-backed temporary directory (``/dev/shm``) — never on the data disk in
the clear — and removed as soon as the ZIP is built.
"""
from __future__ import annotations

import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import pydicom
from pydicom.fileset import FileSet

from appliance.errors import ApplianceError

MEMORY_DIR = "/dev/shm"


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


def _staging_dir() -> str | None:
    return MEMORY_DIR if os.path.isdir(MEMORY_DIR) and os.access(MEMORY_DIR, os.W_OK) else None


def media_zip(archive, object_ids: list[str], label: str = "PACS") -> bytes:
    """A ZIP holding DICOMDIR + DICOM/... for the given archive objects."""
    staging = _staging_dir()
    if staging is None:
        raise ExportError("media export needs a memory-backed /dev/shm to stage files; none is available")
    with tempfile.TemporaryDirectory(dir=staging, prefix="pacs-media-") as tmp:
        out = Path(tmp) / "out"
        fs = FileSet()
        # FileSet stages added instances in the system temp dir; keep that in memory too.
        # (pydicom has no public option for it; tests/viewer covers this use.)
        fs._stage["t"].cleanup()
        fs._stage["t"] = tempfile.TemporaryDirectory(dir=staging, prefix="pacs-stage-")
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
