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

``choose`` is the one rule C-MOVE, C-GET and forwarding use to pick the syntax of an
outgoing C-STORE among the ones the receiver accepted (``producible``: the stored
syntax first, then explicit and implicit VR little endian); ``to_syntax`` makes the
Part 10 bytes in that syntax.
"""
from __future__ import annotations

import io

import pydicom
from pydicom.filewriter import dcmwrite
from pydicom.dataset import Dataset
import numpy as np
from pydicom.uid import (UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from ..errors import ApplianceError

LOSSY = {
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203",
}


class TranscodeError(ApplianceError):
    """The peer accepts no syntax we can produce from the stored object without loss."""


def is_uncompressed(ts: str) -> bool:
    uid = UID(ts)
    return uid.is_transfer_syntax and not uid.is_compressed and not uid.is_deflated


# What the box can send any stored object as, besides its stored syntax, best first: explicit VR
# keeps the value representations a receiver would otherwise look up in its own dictionary.
FALLBACKS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Byte width of the words of each "other" VR: a big endian value is swapped word by word (PS3.5 7.3).
_WORD_BYTES = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def producible(stored_ts: str) -> tuple[str, ...]:
    """The transfer syntaxes an object stored in ``stored_ts`` can be sent in, best first."""
    return (str(stored_ts),) + tuple(str(t) for t in FALLBACKS if t != stored_ts)


def choose(stored_ts: str, accepted) -> str:
    """The syntax to send an object stored in ``stored_ts`` in, among those the receiver ``accepted``.

    The stored syntax when accepted (the exact bytes go out), else a little endian one the box
    produces without loss (decoding big endian, deflate or a compressed syntax); TranscodeError
    when the receiver accepted none of them.
    """
    accepted = {str(t) for t in accepted}
    for ts in producible(stored_ts):
        if ts in accepted:
            return ts
    names = ", ".join(sorted(UID(t).name for t in accepted)) or "nothing"
    raise TranscodeError(f"the receiver accepts only {names} for this object, stored as {UID(stored_ts).name}; "
                         "the appliance sends the stored syntax or little endian, never compresses")


def to_syntax(part10: bytes, stored_ts: str, target: str) -> bytes:
    """The Part 10 bytes of ``part10`` (stored in ``stored_ts``) in ``target``, one of ``producible``."""
    if str(target) == str(stored_ts):
        return part10
    if str(target) not in producible(stored_ts):
        raise TranscodeError(f"cannot produce {UID(target).name} from {UID(stored_ts).name} without loss")
    ds = for_peer(part10, stored_ts, [target])
    ds.file_meta.TransferSyntaxUID = UID(target)
    if getattr(ds, "preamble", None) is None:
        ds.preamble = b"\0" * 128
    out = io.BytesIO()
    try:
        # force_encoding: pydicom otherwise refuses to write a big endian dataset as little endian
        dcmwrite(out, ds, implicit_vr=UID(target).is_implicit_VR, little_endian=True, force_encoding=True)
    except Exception as exc:  # noqa: BLE001 - an unwritable element becomes a clear sub-operation failure
        raise TranscodeError(f"cannot encode the object as {UID(target).name}: {exc}") from None
    return out.getvalue()


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
    """Byte-swap the big endian words of every OW/OL/OF/OD/OV value (pixel data, LUTs, overlays).

    pydicom converts every parsed element when it writes the dataset in little endian, but
    writes these values as the bytes it holds.
    """
    for elem in ds.iterall():
        width = _WORD_BYTES.get(elem.VR)
        if width and isinstance(elem.value, bytes) and len(elem.value) % width == 0:
            elem.value = np.frombuffer(elem.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()
