"""Parsing the Accept header the way PS3.18 8.7 uses it.

DICOMweb media ranges carry parameters that matter (``type`` inside
``multipart/related``, ``transfer-syntax``), so each range is kept with its
parameters, sorted by quality (q), highest first, stable otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MediaRange:
    type: str  # "multipart/related", "application/dicom", "*/*", ...
    params: dict = field(default_factory=dict)
    q: float = 1.0

    @property
    def part_type(self) -> str:
        """The media type of each part of a multipart range (``type=``), else the type itself."""
        if self.type == "multipart/related":
            return self.params.get("type", "")
        return self.type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(value: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out, cur, quoted = [], [], False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def parse_media_type(value: str) -> MediaRange:
    pieces = _split(value, ";")
    media = pieces[0].strip().lower()
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, val = piece.partition("=")
        name, val = name.strip().lower(), val.strip().strip('"').strip()
        if not name:
            continue
        if name == "q":
            try:
                q = float(val)
            except ValueError:
                q = 0.0
        else:
            params[name] = val.lower() if name == "type" else val
    return MediaRange(media, params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(v) for v in _split(header, ",") if v.strip()]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


def matches(offered: str, wanted: str) -> bool:
    """Whether a concrete media type ``offered`` falls in the range ``wanted``."""
    if wanted in ("*/*", "*", ""):
        return True
    major, _, minor = wanted.partition("/")
    if minor == "*":
        return offered.split("/")[0] == major
    return offered == wanted
