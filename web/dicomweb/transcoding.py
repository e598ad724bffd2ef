"""Transfer syntaxes on the way out of DICOMweb, on top of the shared ``appliance.convert.transcode``.

``appliance.convert.transcode`` (shared with C-GET/C-MOVE) decides what is lossless-safe:
decompressing (or byte-swapping) to an uncompressed little endian syntax, never
compressing. This module adds what WADO-RS needs besides: Part 10 bytes in the
target syntax, the media type of a compressed frame, single frames as stored or decoded.
"""
from __future__ import annotations

import io
import logging

import pydicom

from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from appliance.convert.render import UndecodableImage
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

TARGETS = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}

# Media type of a single compressed frame (PS3.18 Table 8.7.3-5), by transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
}


class CannotTranscode(ApplianceError):
    """The object cannot be given in the transfer syntax asked for (HTTP 406)."""

    http_status = 406


def can_transcode(src: str, dst: str) -> bool:
    """Whether an object stored in ``src`` can be sent in ``dst`` without a lossy step."""
    return dst == src or dst in TARGETS


def to_syntax(data: bytes, src: str, dst: str) -> bytes:
    """The Part 10 bytes of ``data`` (stored in ``src``) re-encoded in ``dst``."""
    if src == dst:
        return data
    if not can_transcode(src, dst):
        raise CannotTranscode(f"cannot convert from {UID(src).name} to {UID(dst).name} without loss")
    from appliance.convert import transcode  # the shared module (C-GET/C-MOVE use it too)

    try:
        ds = transcode.for_peer(data, src, [dst])
        ds.file_meta.TransferSyntaxUID = UID(dst)
        out = io.BytesIO()
        # explicit encoding arguments: pydicom then also rewrites a big endian dataset as little endian
        pydicom.dcmwrite(out, ds, implicit_vr=dst == ImplicitVRLittleEndian, little_endian=True,
                         enforce_file_format=True)
    except Exception as exc:  # noqa: BLE001 - decoders raise many kinds
        raise CannotTranscode(f"converting to {UID(dst).name} failed: {exc}") from exc
    return out.getvalue()


def frame_media_type(ts: str) -> str:
    return FRAME_MEDIA_TYPES.get(ts, "application/octet-stream")


def _frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def stored_frame(ds: Dataset, index: int) -> bytes:
    """Frame ``index`` (0-based) as stored: the compressed bitstream, or the native pixel bytes."""
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if ts.is_encapsulated:
        return get_frame(ds.PixelData, index, number_of_frames=_frames(ds))
    if ts == ExplicitVRBigEndian or int(ds.get("BitsAllocated") or 8) == 1:
        return native_frame(ds, index)
    data = ds.PixelData
    size = len(data) // _frames(ds)
    return data[index * size:(index + 1) * size]


def native_frame(ds: Dataset, index: int) -> bytes:
    """Frame ``index`` decoded to little-endian native pixel bytes (PS3.5 8.2 layout)."""
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if not ts.is_encapsulated and ts != ExplicitVRBigEndian and int(ds.get("BitsAllocated") or 8) != 1:
        return stored_frame(ds, index)
    frames = _frames(ds)
    try:
        arr = pixel_array(ds, index=index if frames > 1 else None)
    except Exception as exc:  # noqa: BLE001
        # The stored data is at fault, not the Accept header: a 5xx with the reason, not a 406.
        raise UndecodableImage(f"the frame could not be decoded from {ts.name}: {exc.__class__.__name__}") from exc
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
