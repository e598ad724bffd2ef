"""C-FIND response identifiers encoded straight from index records.

pydicom's writer costs ~10 us per element (a DataElement, value validation, a
buffer per element), so a 10-key response took ~250 us to build and encode: 70 %
of the server's time on a 142-match study query. The keys a response carries are
fixed for the whole query and their values are already strings or integers in the
index, so ``IdentifierEncoder`` looks each key's tag and VR up once per query and
then only joins bytes per match.

It handles the flat VRs C-FIND returns (``VRS``) in Implicit and Explicit VR Little
Endian. For anything else (a sequence key, an ambiguous VR, big endian, deflate)
``IdentifierEncoder.for_keys`` returns None and the caller builds a pydicom Dataset,
as it does for a single value this encoder will not take (a non-ASCII character in a
VR that has no character set). tests/dicom/test_identifier.py checks its output
byte for byte against pydicom's for every VR here.

Encoding rules (PS3.5 6.2, 7.1): values padded to even length with a space (UI: a
NUL); multiple values joined with a backslash; text VRs (SH LO ST LT UC UT PN) in the
response's character set: ISO_IR 192 (UTF-8) when any value is not ASCII, declared
in (0008,0005) as the old response_for did.
"""
from __future__ import annotations

import struct
from typing import Any, Iterable

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue

SPECIFIC_CHARACTER_SET = 0x00080005
UTF8_CHARSET = b"ISO_IR 192"
# VRs whose values follow the Specific Character Set; pydicom writes the others as Latin-1.
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT", "PN"})
ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
BINARY_VRS = {"US": "<H", "UL": "<I", "SS": "<h", "SL": "<i"}
VRS = TEXT_VRS | ASCII_VRS | frozenset(BINARY_VRS)
LONG_LENGTH_VRS = frozenset({"UC", "UR", "UT"})  # explicit VR: 2 reserved bytes + 4-byte length


_US = struct.Struct("<H").pack
_UL = struct.Struct("<I").pack


def key_text(value: Any) -> str:
    """A request identifier's key value as the index's query engine takes it (C-FIND, C-MOVE/C-GET,
    worklist): None is "", a real multi-value is joined with backslashes. Only lists, tuples and
    MultiValues are joined: a PersonName is iterable too, over its characters."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


class Unencodable(ValueError):
    """A value this encoder will not write; the caller falls back to pydicom."""


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\\".join("" if v is None else str(v) for v in value)
    return str(value)


class IdentifierEncoder:
    """Encodes records for one query: a fixed, tag-ordered list of (keyword, tag, VR)."""

    def __init__(self, keys: list[tuple[str, int, str]], explicit_vr: bool):
        self.keys = sorted(keys, key=lambda k: k[1])
        self.explicit_vr = explicit_vr
        # Per key, worked out once: (keyword, VR, tag/VR bytes, 4-byte length?, padding, binary format, text VR?)
        self._plan = []
        for keyword, tag, vr in self.keys:
            head, long_length = self._header(tag, vr)
            self._plan.append((keyword, vr, head, long_length, b"\x00" if vr == "UI" else b" ", BINARY_VRS.get(vr),
                               vr in TEXT_VRS))
        self._charset = self._element(self._header(SPECIFIC_CHARACTER_SET, "CS"), UTF8_CHARSET)

    @classmethod
    def for_keys(cls, keywords: Iterable[str], *, explicit_vr: bool) -> IdentifierEncoder | None:
        """An encoder for these response keywords, or None if one of them is not a flat VR."""
        keys = []
        for keyword in dict.fromkeys(keywords):
            tag = tag_for_keyword(keyword)
            if tag == SPECIFIC_CHARACTER_SET:
                continue  # added per response, only when a value needs it
            # The character set element must stay first in tag order; group lengths are not written.
            if tag is None or tag < SPECIFIC_CHARACTER_SET or tag & 0xFFFF == 0:
                return None
            vr = dictionary_VR(tag)
            if vr not in VRS:
                return None
            keys.append((keyword, tag, vr))
        return cls(keys, explicit_vr)

    def _header(self, tag: int, vr: str) -> tuple[bytes, bool]:
        """The tag (and VR) bytes before the length, and whether the length takes 4 bytes."""
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        if not self.explicit_vr:
            return head, True
        if vr in LONG_LENGTH_VRS:
            return head + vr.encode() + b"\x00\x00", True
        return head + vr.encode(), False

    def encode(self, values: dict[str, Any]) -> bytes:
        """The identifier for ``values`` (keyword -> str, int, list or None; missing = empty)."""
        parts = []
        utf8 = False
        for keyword, vr, head, long_length, pad, fmt, text_vr in self._plan:
            value = values.get(keyword)
            if value is None or value == "" or value == []:
                data = b""
            elif fmt is not None:
                try:
                    items = value if isinstance(value, (list, tuple)) else [value]
                    data = b"".join(struct.pack(fmt, int(v)) for v in items)
                except (struct.error, TypeError, ValueError) as exc:
                    raise Unencodable(f"{keyword}: {exc}") from None
            else:
                text = value if value.__class__ is str else _text(value)
                if text.isascii():
                    data = text.encode("ascii")
                elif text_vr:
                    utf8 = True
                    data = text.encode("utf-8")
                else:
                    raise Unencodable(f"{keyword}: non-ASCII value in VR {vr}")
                if len(data) & 1:
                    data += pad
            if long_length:
                parts.append(head + _UL(len(data)) + data)
            elif len(data) <= 0xFFFF:
                parts.append(head + _US(len(data)) + data)
            else:
                raise Unencodable(f"{keyword}: value longer than 64 KiB in a 2-byte-length VR")
        if utf8:
            parts.insert(0, self._charset)
        return b"".join(parts)

    @staticmethod
    def _element(header: tuple[bytes, bool], data: bytes) -> bytes:
        head, long_length = header
        return head + (_UL if long_length else _US)(len(data)) + data
