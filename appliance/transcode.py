"""Transcoding on the way out, only where no information is lost.

The archive keeps every object exactly as received. When a peer did not accept
the stored transfer syntax, ``for_peer`` produces a dataset in one the peer
did accept, if that is lossless-safe:

- compressed (JPEG, JPEG-LS, JPEG 2000, RLE, deflate) -> uncompressed: the
  decoded pixels are exactly what any viewer would show, so nothing more is
  lost (pydicom with the pylibjpeg plugins does the decoding);
- uncompressed -> another uncompressed syntax (implicit/explicit VR, endianness).

Compressing on the way out (which could be lossy, or silently change what the
peer stores) is refused with a ``TranscodeError`` saying why.
"""
from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset
import numpy as np
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian

from .errors import ApplianceError

LOSSY = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203",
}


class TranscodeError(ApplianceError):
    """The peer accepts no syntax we can produce from the stored object without loss."""


def is_uncompressed(ts: str) -> bool:
    uid = UID(ts)
    return uid.is_transfer_syntax and not uid.is_compressed and not uid.is_deflated


def for_peer(part10: bytes, stored_ts: str, accepted: list[str]) -> Dataset:
    """A dataset the peer can take, given the transfer syntaxes it accepted for this SOP class.

    The caller sends it with pynetdicom, which encodes it in the accepted
    uncompressed syntax.
    """
    target = next((ts for ts in accepted if is_uncompressed(ts)), None)
    if target is None:
        raise TranscodeError(
            f"the peer accepts only {', '.join(UID(t).name for t in accepted) or 'nothing'} for this object, "
            f"stored as {UID(stored_ts).name}; the appliance only decompresses on the way out"
        )
    ds = pydicom.dcmread(io.BytesIO(part10))
    if UID(stored_ts).is_compressed:
        try:
            ds.decompress(generate_instance_uid=False)  # same instance, another encoding
        except Exception as exc:  # noqa: BLE001 - any decoder failure becomes a clear sub-operation failure
            raise TranscodeError(f"cannot decompress {UID(stored_ts).name}: {exc}") from None
        if stored_ts in LOSSY:
            ds.LossyImageCompression = "01"
    elif UID(stored_ts) == DeflatedExplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    elif UID(stored_ts) == ExplicitVRBigEndian:
        _pixels_to_little_endian(ds)
    # pynetdicom re-encodes an uncompressed dataset into whichever uncompressed syntax was accepted.
    return ds


def _pixels_to_little_endian(ds: Dataset) -> None:
    """Byte-swap big endian pixel data for a little endian peer.

    pydicom converts every parsed element when pynetdicom encodes the dataset in the
    accepted little endian syntax, but writes OW pixel data as the bytes it holds.
    """
    if "PixelData" not in ds:
        return
    bits = int(ds.get("BitsAllocated", 8) or 8)
    if bits in (16, 32):
        swapped = np.frombuffer(ds.PixelData, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}")
        ds.PixelData = swapped.tobytes()
