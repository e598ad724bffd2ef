"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered images and thumbnails.

Instances are streamed from the archive part by part, in the stored transfer
syntax unless the Accept header asks for another one that ``transcoding`` can
produce without loss (else 406). Everything a response generator needs is
captured before the view returns: generators run after the request context.
"""
from __future__ import annotations

import json
import logging
from typing import Iterator

from flask import Response, request
from pydicom.uid import UID, ExplicitVRLittleEndian

from . import transcoding
from appliance.convert.render import RenderParams, number_of_frames
from appliance.errors import NotFound

from . import dicomjson, multipart
from .accept import matches, parse_accept, parse_media_type
from .blueprint import audit, base_url, bp, read_access, require_export
from .context import DicomWebContext, Located, ctx
from .errors import BadRequest, NotAcceptable

log = logging.getLogger(__name__)

STORED = None  # negotiation result: send each instance in its stored transfer syntax


# -- instances -----------------------------------------------------------------
def negotiate_instances(accept: str | None, stored: set[str]) -> str | None:
    """The transfer syntax to send (``STORED`` = as stored); NotAcceptable if no range can be met."""
    for r in parse_accept(accept):
        if r.type == "multipart/related":
            part = r.part_type or "application/dicom"
            if not matches("application/dicom", part):
                continue
        elif not matches("application/dicom", r.type):
            continue
        ts = r.transfer_syntax
        if ts in (None, "", "*"):
            return STORED
        if all(transcoding.can_transcode(s, ts) for s in stored):
            return ts
    raise NotAcceptable(
        'cannot satisfy the Accept header; use multipart/related; type="application/dicom" with '
        f"transfer-syntax=* (as stored), {ExplicitVRLittleEndian} or another syntax the stored objects can be "
        "converted to without loss")


def _instance_parts(c: DicomWebContext, located: list[Located], target: str | None):
    for item in located:
        if target is STORED or target == item.transfer_syntax:
            ts = item.transfer_syntax
            chunks: Iterator[bytes] = c.stream(item.object_id)
        else:
            try:
                data = transcoding.to_syntax(c.object_bytes(item.object_id), item.transfer_syntax, target)
            except transcoding.CannotTranscode as exc:
                log.warning("instance left out of a WADO-RS response: %s", exc)
                continue
            ts, chunks = target, iter((data,))
        yield {"Content-Type": f"application/dicom; transfer-syntax={ts}"}, chunks


def _retrieve(locate, what: str) -> Response:
    refused = require_export()  # before the lookup: a refused user learns nothing about what exists
    if refused is not None:
        return refused
    located = locate()
    c = ctx()
    target = negotiate_instances(request.headers.get("Accept"), {i.transfer_syntax for i in located})
    boundary = multipart.new_boundary()
    audit("study.export", located[0].study_uid, patient_id=located[0].patient_id,
          detail=f"dicomweb {what} instances={len(located)}")
    body = multipart.stream(_instance_parts(c, located, target), boundary)
    return Response(body, 200, content_type=multipart.content_type("application/dicom", boundary, target))


@bp.get("/studies/<study>")
@read_access
def retrieve_study(study):
    return _retrieve(lambda: ctx().locate(study), "study")


@bp.get("/studies/<study>/series/<series>")
@read_access
def retrieve_series(study, series):
    return _retrieve(lambda: ctx().locate(study, series), "series")


@bp.get("/studies/<study>/series/<series>/instances/<instance>")
@read_access
def retrieve_instance(study, series, instance):
    return _retrieve(lambda: ctx().locate(study, series, instance), "instance")


# -- metadata ------------------------------------------------------------------
def _want_json(accept: str | None) -> None:
    for r in parse_accept(accept):
        if any(matches(t, r.type) for t in ("application/dicom+json", "application/json")):
            return
        if r.type == "multipart/related" and matches("application/dicom+json", r.part_type or ""):
            return
    raise NotAcceptable("metadata is available as application/dicom+json only")


def _bulk_base(item: Located, root: str) -> str:
    return f"{root}/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}/bulkdata/"


def _metadata(located: list[Located], what: str) -> Response:
    _want_json(request.headers.get("Accept"))
    c, root = ctx(), base_url()
    audit("dicomweb.retrieve", located[0].study_uid, patient_id=located[0].patient_id,
          detail=f"{what} metadata instances={len(located)}")

    def body():
        yield b"["
        for n, item in enumerate(located):
            header, has_pixels = c.header(item.object_id)
            prefix = _bulk_base(item, root)
            doc = dicomjson.dataset_to_json(header, lambda path, prefix=prefix: prefix + path, has_pixels)
            yield (b"," if n else b"") + json.dumps(doc, separators=(",", ":")).encode()
        yield b"]"

    return Response(body(), 200, content_type="application/dicom+json")


@bp.get("/studies/<study>/metadata")
@read_access
def study_metadata(study):
    return _metadata(ctx().locate(study), "study")


@bp.get("/studies/<study>/series/<series>/metadata")
@read_access
def series_metadata(study, series):
    return _metadata(ctx().locate(study, series), "series")


@bp.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
@read_access
def instance_metadata(study, series, instance):
    return _metadata(ctx().locate(study, series, instance), "instance")


# -- frames --------------------------------------------------------------------
def parse_frames(text: str, count: int) -> list[int]:
    """1-based frame numbers from ``1,2,5`` as 0-based indexes; 400 if malformed, 404 if absent.

    Each frame may be named once and the list may not be longer than the instance's frame
    count: ``1,1,1,...`` made one short URL ask for hundreds of copies of a frame.
    """
    items = [p for p in text.split(",") if p.strip()]
    if len(items) > count:
        raise BadRequest(f"the frame list names {len(items)} frames; the instance has {count}")
    try:
        numbers = [int(p) for p in items]
    except ValueError:
        raise BadRequest(f"frame list {text[:40]!r} must be comma-separated numbers starting at 1") from None
    if not numbers or any(n < 1 for n in numbers):
        raise BadRequest("frame numbers start at 1")
    if len(set(numbers)) != len(numbers):
        twice = next(n for n in numbers if numbers.count(n) > 1)
        raise BadRequest(f"frame {twice} is listed more than once")
    missing = [n for n in numbers if n > count]
    if missing:
        raise NotFound(f"frame {missing[0]} does not exist: the instance has {count} frame(s)")
    return [n - 1 for n in numbers]


NATIVE = ("native", "application/octet-stream")  # decoded to little endian (PS3.18 8.7.3.3.1)


def negotiate_frames(accept: str | None, stored_ts: str) -> tuple[str, str]:
    """('stored', media type) for the bitstream as stored, or NATIVE (decoded, little endian).

    PS3.18 8.7.3.5: ``transfer-syntax=*`` lets the server choose, so a compressed frame goes
    out as stored (no decoding on the box; the client decodes). A range naming the stored
    syntax gets it as stored too. Without a transfer-syntax parameter, application/octet-stream
    means Explicit VR Little Endian (its default), so the box decodes.
    """
    stored_type = transcoding.frame_media_type(stored_ts)
    # Only an encapsulated bitstream can go as stored; native pixels are always sent decoded to little
    # endian (as stored for LE), and a video stream is not cut into frames.
    bitstream = UID(stored_ts).is_encapsulated and not stored_type.startswith("video/")
    for r in parse_accept(accept):
        part = r.part_type if r.type == "multipart/related" else r.type
        ts = r.transfer_syntax
        as_stored = bitstream and ts in ("*", stored_ts)
        if part in ("", "*", "*/*"):
            if bitstream and ts in (None, "", "*", stored_ts):
                return "stored", stored_type
            if ts in (None, "", "*", ExplicitVRLittleEndian, stored_ts):
                return NATIVE
            continue
        if part == "application/octet-stream":
            if as_stored:
                return "stored", "application/octet-stream"  # labelled with its transfer syntax
            if ts in (None, "", "*", ExplicitVRLittleEndian):
                return NATIVE
            continue
        if bitstream and matches(stored_type, part) and ts in (None, "", "*", stored_ts):
            return "stored", stored_type
    raise NotAcceptable(
        f'frames of this instance are available as multipart/related; type="application/octet-stream" '
        f"(decoded) or type=\"{stored_type}\" (as stored, transfer syntax {stored_ts})")


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>")
@read_access
def retrieve_frames(study, series, instance, frames):
    c = ctx()
    item = c.locate(study, series, instance)[0]
    mode, media = negotiate_frames(request.headers.get("Accept"), item.transfer_syntax)
    ds = c.dataset(item.object_id)
    if "PixelData" not in ds:
        raise NotFound("this instance has no pixel data, so it has no frames")
    indexes = parse_frames(frames, number_of_frames(ds))
    audit("dicomweb.retrieve", item.study_uid, patient_id=item.patient_id,
          detail=f"frames count={len(indexes)}")
    if mode == "stored":
        ts, frame = item.transfer_syntax, transcoding.stored_frame
    else:
        ts, frame = ExplicitVRLittleEndian, transcoding.native_frame
    # The first frame now, so a frame that cannot be decoded is a 406 rather than a cut-off 200;
    # the others one at a time as the client reads: memory stays at one frame, however long the list.
    first = frame(ds, indexes[0])
    boundary = multipart.new_boundary()
    root = f"{base_url()}/studies/{study}/series/{series}/instances/{instance}/frames/"

    def parts():
        for n, i in enumerate(indexes):
            payload = first if n == 0 else frame(ds, i)
            yield {"Content-Type": f"{media}; transfer-syntax={ts}", "Content-Location": f"{root}{i + 1}"}, (payload,)

    return Response(multipart.stream(parts(), boundary), 200,
                    content_type=multipart.content_type(media, boundary, ts))


# -- bulk data -----------------------------------------------------------------
@bp.get("/studies/<study>/series/<series>/instances/<instance>/bulkdata/<path:tag_path>")
@read_access
def retrieve_bulkdata(study, series, instance, tag_path):
    c = ctx()
    item = c.locate(study, series, instance)[0]
    if tag_path.upper().strip("/") == "7FE00010":
        return retrieve_frames.__wrapped__(study, series, instance, ",".join(
            str(n + 1) for n in range(number_of_frames(c.dataset(item.object_id)))))
    ds = c.dataset(item.object_id)
    elem = dicomjson.find_element(ds, tag_path)
    if elem is None or elem.VR == "SQ":
        raise NotFound(f"no bulk data at {tag_path[:80]!r} in this instance")
    for r in parse_accept(request.headers.get("Accept")):
        part = r.part_type if r.type == "multipart/related" else r.type
        if matches("application/octet-stream", part or "*/*"):
            break
    else:
        raise NotAcceptable('bulk data is available as multipart/related; type="application/octet-stream"')
    value = elem.value if isinstance(elem.value, (bytes, bytearray)) else _element_bytes(elem)
    audit("dicomweb.retrieve", item.study_uid, patient_id=item.patient_id, detail="bulkdata")
    boundary = multipart.new_boundary()
    parts = [({"Content-Type": "application/octet-stream"}, (bytes(value),))]
    return Response(multipart.stream(parts, boundary), 200,
                    content_type=multipart.content_type("application/octet-stream", boundary))


def _element_bytes(elem) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_data_element(fp, elem)
    return fp.getvalue()[8:]  # drop the tag and length


# -- rendered and thumbnails -----------------------------------------------------
def negotiate_rendered() -> str:
    wanted = request.args.get("accept")
    ranges = [parse_media_type(v) for v in wanted.split(",")] if wanted else parse_accept(
        request.headers.get("Accept"))
    for r in ranges:
        for media in ("image/jpeg", "image/png"):
            if matches(media, r.type if r.type != "multipart/related" else r.part_type or "*/*"):
                return media
    raise NotAcceptable("rendered images are available as image/jpeg or image/png")


def _rendered(item: Located, index: int, thumbnail: bool, what: str) -> Response:
    media = negotiate_rendered()
    params = RenderParams.parse(request.args, media, thumbnail=thumbnail)
    audit("dicomweb.retrieve", item.study_uid, patient_id=item.patient_id, detail=what)
    data = ctx().renderer.render(item.object_id, index, params)
    response = Response(data, 200, content_type=media)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _first_frame(frames: str) -> int:
    try:
        first = int(frames.split(",")[0])
    except ValueError:
        raise BadRequest(f"frame list {frames[:40]!r} must be numbers starting at 1") from None
    if first < 1:
        raise BadRequest("frame numbers start at 1")
    return first - 1


def _representative(located: list[Located]) -> Located:
    """An image to stand for a study or series: the middle image of its first series with pixels."""
    images = [i for i in located if i.rows] or located
    series = images[0].series_uid
    in_series = [i for i in images if i.series_uid == series]
    return in_series[len(in_series) // 2]


@bp.get("/studies/<study>/series/<series>/instances/<instance>/rendered")
@read_access
def instance_rendered(study, series, instance):
    return _rendered(ctx().locate(study, series, instance)[0], 0, False, "rendered")


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>/rendered")
@read_access
def frame_rendered(study, series, instance, frames):
    return _rendered(ctx().locate(study, series, instance)[0], _first_frame(frames), False, "rendered frame")


def _rendered_many(located: list[Located]) -> Response:
    """Study or series rendered: every image's first frame, as multipart/related parts."""
    media = negotiate_rendered()
    params = RenderParams.parse(request.args, media)
    c = ctx()
    images = [i for i in located if i.rows]
    if not images:
        raise NotAcceptable("nothing here has pixel data to render")
    audit("dicomweb.retrieve", located[0].study_uid, patient_id=located[0].patient_id,
          detail=f"rendered images={len(images)}")
    boundary = multipart.new_boundary()
    parts = (({"Content-Type": media}, (c.renderer.render(i.object_id, 0, params),)) for i in images)
    return Response(multipart.stream(parts, boundary), 200, content_type=multipart.content_type(media, boundary))


@bp.get("/studies/<study>/rendered")
@read_access
def study_rendered(study):
    return _rendered_many(ctx().locate(study))


@bp.get("/studies/<study>/series/<series>/rendered")
@read_access
def series_rendered(study, series):
    return _rendered_many(ctx().locate(study, series))


@bp.get("/studies/<study>/series/<series>/instances/<instance>/thumbnail")
@read_access
def instance_thumbnail(study, series, instance):
    return _rendered(ctx().locate(study, series, instance)[0], 0, True, "thumbnail")


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>/thumbnail")
@read_access
def frame_thumbnail(study, series, instance, frames):
    return _rendered(ctx().locate(study, series, instance)[0], _first_frame(frames), True, "thumbnail")


@bp.get("/studies/<study>/series/<series>/thumbnail")
@read_access
def series_thumbnail(study, series):
    return _rendered(_representative(ctx().locate(study, series)), 0, True, "thumbnail")


@bp.get("/studies/<study>/thumbnail")
@read_access
def study_thumbnail(study):
    return _rendered(_representative(ctx().locate(study)), 0, True, "thumbnail")
