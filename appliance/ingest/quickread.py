"""The common case of ``dicomfile.parse`` without pydicom's reader: a whole, well-formed Part 10 file in
a little-endian, non-deflated transfer syntax.

pydicom's reader spends more time per element (a generator step, several reads and seeks, a
RawDataElement) than parse spends on the values it keeps. This walk reads element headers from a
buffer, keeps the raw values of the wanted top-level elements exactly as pydicom would
(RawDataElements in a pydicom Dataset), and steps over everything else, walking undefined-length
sequences and encapsulated pixel data item by item. It proves the file whole on the way: every
value lies inside the file, every undefined length ends at its delimiter, and the last element ends
at the last byte.

Anything else (no preamble, big endian, deflate, an unknown VR, an encoding that differs from the
declared one, a truncated or odd structure, stray bytes at the end) returns None and the caller
reads the file with pydicom, which then decides (and words the refusal) exactly as before.
"""
from __future__ import annotations

from struct import Struct
from typing import BinaryIO

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, ImplicitVRLittleEndian

CHUNK = 64 * 1024
UNDEFINED = 0xFFFFFFFF
ITEM, SEQUENCE_END = 0xFFFEE000, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
EXPLICIT = Struct("<HH2sH")
IMPLICIT = Struct("<HHL")
LONG = Struct("<L")
# Explicit VRs (PS3.5 7.1.2) and those of them with a 4-byte length after 2 reserved bytes.
VRS = frozenset(vr.encode() for vr in (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT "
    "UV").split())
LONG_VRS = frozenset(vr.encode() for vr in "OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


class _NotPlain(Exception):
    """Not the common case: let pydicom read it."""


class _Window:
    """The bytes of ``src`` around the walk, read a chunk at a time (values stepped over are not read)."""

    def __init__(self, src: BinaryIO, size: int):
        self.src, self.size, self.start, self.buf = src, size, 0, b""

    def at(self, pos: int, n: int) -> int:
        """The offset in ``buf`` of the ``n`` bytes at ``pos``; raises when the file ends first."""
        if pos + n > self.size:
            raise _NotPlain
        if pos < self.start or pos + n > self.start + len(self.buf):
            self.src.seek(pos)
            self.buf, self.start = self.src.read(max(n, CHUNK)), pos
            if len(self.buf) < n:
                raise _NotPlain
        return pos - self.start


def read_plain(src: BinaryIO, size: int, wanted: frozenset[int], presence_only: frozenset[int]) -> Dataset | None:
    """The wanted top-level elements (with ``file_meta``), or None when this is not the common case.

    ``presence_only`` elements (pixel data) are kept without their value (``value`` None, as pydicom
    leaves a deferred one), with their length and position."""
    try:
        w = _Window(src, size)
        if size < 132 or _bytes(w, 128, 4) != b"DICM":
            return None
        meta: dict = {}
        pos = _walk(w, 132, False, meta, None, group2=True)
        syntax = meta.get(BaseTag(0x00020010))
        if syntax is None or not syntax.value:
            return None
        syntax = UID(syntax.value.decode("ascii", "replace").strip("\0 "))
        implicit = syntax == ImplicitVRLittleEndian
        if not syntax.is_transfer_syntax or syntax.is_deflated or not syntax.is_little_endian \
                or (syntax.is_implicit_VR and not implicit):
            return None
        if implicit and pos < size and all(0x40 < b < 0x5B for b in _bytes(w, pos + 4, 2)):
            return None  # explicit VR data under an implicit syntax: pydicom reads it (and parse refuses)
        elements: dict = {}
        if _walk(w, pos, implicit, elements, (wanted, presence_only)) != size:
            return None
    except _NotPlain:
        return None
    ds = Dataset(elements)
    ds.file_meta = FileMetaDataset(meta)
    return ds


def _walk(w: _Window, pos: int, implicit: bool, keep: dict | None, tags, group2: bool = False,
          in_item: bool = False) -> int:
    """Step over elements from ``pos``; return where they end (the file's end, the end of group 2, or
    after the item delimiter when ``in_item``). Top-level ``tags`` (wanted, presence_only) go into
    ``keep``; ``tags`` None with ``keep`` keeps every element (the file meta)."""
    size = w.size
    while pos < size:
        o = pos - w.start
        if o < 0 or o + 12 > len(w.buf):  # (12: the longest header; most are in the buffer already)
            if size - pos < 8:
                raise _NotPlain  # stray bytes at the end: pydicom ignores them, let it
            o = w.at(pos, min(12, size - pos))
        if implicit:
            group, elem, length = IMPLICIT.unpack_from(w.buf, o)
            raw_vr = None
        else:
            group, elem, raw_vr, length = EXPLICIT.unpack_from(w.buf, o)
        if group2 and group != 2:
            return pos  # the end of the file meta, whatever the dataset's encoding
        if group == 0xFFFE:  # delimiters have no VR in either encoding
            if in_item and elem == 0xE00D:
                return pos + 8
            raise _NotPlain  # a stray delimiter: pydicom stops there
        tag, header = group << 16 | elem, 8
        if raw_vr is not None:
            if raw_vr not in VRS:
                raise _NotPlain  # pydicom would guess (implicit VR inside explicit): let it
            if raw_vr in LONG_VRS:
                if o + 12 > len(w.buf):
                    raise _NotPlain  # the file ends inside the header
                length, header = LONG.unpack_from(w.buf, o + 8)[0], 12
        value_pos = pos + header
        if length == UNDEFINED:
            if tag == PIXEL_DATA and not in_item and raw_vr in (None, b"OB", b"OW"):
                end = _skip_fragments(w, value_pos)
            elif raw_vr == b"SQ" or (implicit and _dictionary_vr(tag) == "SQ"):
                end = _skip_items(w, value_pos, implicit)
            else:
                raise _NotPlain
        else:
            end = value_pos + length
            if end > size:
                raise _NotPlain
        if keep is not None:
            if tags is None:
                keep[BaseTag(tag)] = _raw(w, tag, raw_vr, length, value_pos, implicit, True)
            elif tag in tags[0]:
                keep[BaseTag(tag)] = _raw(w, tag, raw_vr, length, value_pos, implicit, tag not in tags[1])
        pos = end
    if in_item:
        raise _NotPlain  # the file ends inside an item
    return pos


def _raw(w: _Window, tag: int, raw_vr: bytes | None, length: int, value_pos: int, implicit: bool,
         read: bool) -> RawDataElement:
    vr = raw_vr.decode() if raw_vr is not None else None
    if length == UNDEFINED and read:
        raise _NotPlain  # a wanted value that is a sequence: pydicom makes what it can of it
    if not read or length == UNDEFINED:
        value = None
    elif length:
        value = _bytes(w, value_pos, length)
    else:
        value = empty_value_for_VR(vr, raw=True)
    return RawDataElement(BaseTag(tag), vr, length, value, value_pos, implicit, True)


def _skip_items(w: _Window, pos: int, implicit: bool) -> int:
    """Step over an undefined-length sequence's items; return the position after its delimiter."""
    while True:
        tag, length = _item_header(w, pos)
        if tag == SEQUENCE_END:
            return pos + 8
        if tag != ITEM:
            raise _NotPlain
        pos = _walk(w, pos + 8, implicit, None, None, in_item=True) if length == UNDEFINED \
            else _within(w, pos + 8 + length)


def _skip_fragments(w: _Window, pos: int) -> int:
    """Step over encapsulated pixel data (PS3.5 A.4): defined-length items, then the delimiter."""
    while True:
        tag, length = _item_header(w, pos)
        if tag == SEQUENCE_END:
            return pos + 8
        if tag != ITEM or length == UNDEFINED:
            raise _NotPlain
        pos = _within(w, pos + 8 + length)


def _item_header(w: _Window, pos: int) -> tuple[int, int]:
    group, elem, length = IMPLICIT.unpack_from(w.buf, w.at(pos, 8))
    tag = group << 16 | elem
    if tag == SEQUENCE_END and length != 0:
        raise _NotPlain
    return tag, length


def _bytes(w: _Window, pos: int, n: int) -> bytes:
    o = w.at(pos, n)
    return w.buf[o:o + n]


def _within(w: _Window, end: int) -> int:
    if end > w.size:
        raise _NotPlain
    return end


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None
