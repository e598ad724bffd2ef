"""What the DICOMweb views share: the appliance, bounded caches and the renderer.

Built once per Flask app by ``init_app``; views reach it with ``ctx()``. Objects
are looked up in the index (read-only, on the web thread: never through the
writer), read and decrypted through the archive, and kept only in memory.
"""
from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Iterator

import pydicom
from flask import current_app
from pydicom.dataset import Dataset

from appliance.convert.render import Renderer
from appliance.convert.render_cache import LRUCache
from appliance.errors import NotFound
from appliance.index.studies import InstanceLocation

from .errors import BadRequest

if TYPE_CHECKING:
    from appliance.app import Appliance

UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def check_uid(value: str, what: str) -> str:
    if not value or len(value) > 64 or not UID_PATTERN.match(value):
        raise BadRequest(f"{what} {value[:80]!r} is not a valid UID (digits and dots, at most 64 characters)")
    return value


class _ChunkReader(io.RawIOBase):
    """A seekable file over an archive object's chunks, decrypting only as far as it is read.

    Reading a header therefore decrypts the first chunk(s) only, not the pixel data.
    """

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buf = bytearray()
        self._pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _fill(self, upto: int | None) -> None:
        while not self._done and (upto is None or len(self._buf) < upto):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
            else:
                self._buf += chunk

    def readinto(self, b) -> int:
        self._fill(self._pos + len(b))
        data = self._buf[self._pos:self._pos + len(b)]
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self._fill(None)
            offset += len(self._buf)
        elif whence == io.SEEK_CUR:
            offset += self._pos
        self._pos = max(0, offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def has_more(self) -> bool:
        self._fill(self._pos + 1)
        return len(self._buf) > self._pos


Located = InstanceLocation  # one instance to serve, with the identifiers needed to name it in responses


class DicomWebContext:
    def __init__(self, appliance: "Appliance"):
        self.appliance = appliance
        settings = appliance.config.dicomweb
        # Both charge what a parsed dataset really holds (see footprint), not its size on disk.
        self.objects = LRUCache(settings.object_cache_mb << 20, size_of=lambda item: item[1])
        self.headers = LRUCache(settings.header_cache_mb << 20, size_of=lambda item: item[2],
                                max_entries=settings.header_cache_entries)
        self.renderer = Renderer(self.dataset, LRUCache(settings.render_cache_mb << 20),
                                 threads=settings.render_threads)
        self.cors_origins = list(settings.cors_origins)
        from .blueprint import ViewerAuditWindow

        self.audit_window = ViewerAuditWindow()

    # -- locating ------------------------------------------------------------
    def locate(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> list[Located]:
        """Instances of a study / series / one instance; 404 when there are none."""
        check_uid(study_uid, "Study Instance UID")
        if series_uid is not None:
            check_uid(series_uid, "Series Instance UID")
        if sop_uid is not None:
            check_uid(sop_uid, "SOP Instance UID")
        found = self.appliance.index.studies.study_instances(study_uid, series_uid, sop_uid)
        if not found:
            what = "instance" if sop_uid else "series" if series_uid else "study"
            raise NotFound(f"no such {what} in this archive")
        return found

    # -- reading -------------------------------------------------------------
    def object_bytes(self, object_id: str) -> bytes:
        return self.appliance.archive.read(object_id)

    def dataset(self, object_id: str) -> Dataset:
        """The whole object parsed, kept in the bounded in-memory cache (frames and rendering reuse it)."""
        return self.objects.get_or_make(object_id, lambda: _parse_whole(self.object_bytes(object_id)))[0]

    def header(self, object_id: str) -> tuple[Dataset, bool]:
        """The object's attributes (pixel data left out when read here), and whether it has pixel data."""
        cached_whole = self.objects.get(object_id)
        if cached_whole is not None:
            return cached_whole[0], "PixelData" in cached_whole[0]
        cached = self.headers.get(object_id)
        if cached is not None:
            return cached[:2]
        source = _ChunkReader(self.appliance.archive.iter_chunks(object_id))
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        ds.buffer = None  # pydicom keeps its source: here the reader and its decrypted chunk (up to 1 MiB)
        result = (ds, source.has_more())
        self.headers.put(object_id, (*result, footprint(ds, 0)))
        return result

    def stream(self, object_id: str) -> Iterator[bytes]:
        return self.appliance.archive.iter_chunks(object_id)


ELEMENT_BYTES = 512  # measured (pydicom 3): a parsed element costs ~430-530 bytes of Python objects


def footprint(ds: Dataset, value_bytes: int) -> int:
    """Roughly the memory a parsed dataset holds: its element objects plus ``value_bytes`` of large values.

    Converts every raw element (so threads sharing a cached dataset only read it).
    Charging only the object's size on disk let 128 MiB of small CTs take ~5x that.
    """
    return value_bytes + ELEMENT_BYTES * sum(1 for _elem in ds.iterall())


def _parse_whole(data: bytes) -> tuple[Dataset, int]:
    """The parsed dataset and what the object cache charges for it."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.buffer = None  # pydicom keeps its source; the parsed values hold their own copies
    return ds, footprint(ds, len(data))


def ctx() -> DicomWebContext:
    return current_app.extensions["dicomweb"]
