"""multipart/related (RFC 2387) for DICOMweb: streaming writer and bounded streaming reader.

The writer yields a response part by part, so a study is never held in memory.
The reader hands over one part at a time (each held in memory only, never spooled
to disk in plaintext), and rejects a body that is not well formed with a reason.
"""
from __future__ import annotations

import uuid
from typing import BinaryIO, Iterable, Iterator

from .errors import BadRequest

READ_SIZE = 256 * 1024


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def stream(parts: Iterable[tuple[dict[str, str], Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """The body: each (headers, chunks) part framed by the boundary, then the close delimiter."""
    delimiter = f"--{boundary}\r\n".encode()
    for headers, chunks in parts:
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        yield delimiter + head.encode("latin-1") + b"\r\n"
        for chunk in chunks:
            if chunk:
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def boundary_of(content_type_header: str) -> str:
    from .accept import parse_media_type

    media = parse_media_type(content_type_header or "")
    if media.type != "multipart/related":
        raise UnsupportedMediaTypeError(
            f"expected Content-Type multipart/related; type=\"application/dicom\", got {media.type or 'none'}")
    boundary = media.params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise BadRequest("the multipart/related Content-Type has no boundary parameter")
    return boundary


class UnsupportedMediaTypeError(BadRequest):
    http_status = 415


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(f"malformed multipart body: part header line without a colon: {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


def iter_parts(src: BinaryIO, boundary: str, max_part: int) -> Iterator[tuple[dict[str, str], bytes]]:
    """Yield (headers with lower-case names, body) for each part of a multipart body read from ``src``."""
    dash = b"--" + boundary.encode("latin-1")
    delimiter = b"\r\n" + dash
    buf = bytearray(b"\r\n")  # so a body starting with the first delimiter needs no special case
    eof = False

    def more() -> bool:
        nonlocal eof
        if eof:
            return False
        block = src.read(READ_SIZE)
        if not block:
            eof = True
            return False
        buf.extend(block)
        return True

    # Skip the preamble up to the first delimiter.
    while True:
        at = buf.find(delimiter)
        if at >= 0:
            del buf[:at + len(delimiter)]
            break
        if len(buf) > 64 * 1024 or not more():
            raise BadRequest("malformed multipart body: the boundary from Content-Type never appears")
    while True:
        while len(buf) < 2 and more():
            pass
        if buf[:2] == b"--":
            return  # close delimiter
        # Rest of the delimiter line (transport padding), then the part's headers.
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > 16 * 1024 or not more():
                raise BadRequest("malformed multipart body: a part's headers are not terminated by a blank line")
        line_end = buf.find(b"\r\n")
        headers = _parse_headers(bytes(buf[line_end + 2:end])) if line_end < end else {}
        del buf[:end + 4]
        # The body runs to the next delimiter.
        searched = 0
        while True:
            at = buf.find(delimiter, max(0, searched - len(delimiter)))
            if at >= 0:
                break
            searched = len(buf)
            if searched > max_part + len(delimiter):
                raise BadRequest(f"a part is larger than the {max_part >> 20} MiB limit")
            if not more():
                raise BadRequest("malformed multipart body: it ends inside a part (no closing boundary)")
        body = bytes(buf[:at])
        del buf[:at + len(delimiter)]
        yield headers, body
