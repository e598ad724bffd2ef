"""WADO-URI (PS3.18 9, formerly "WADO"): one object by query parameters, for older clients.

``GET /dicomweb/wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``
with ``contentType`` application/dicom (the object, optionally ``transferSyntax``)
or image/jpeg / image/png (rendered: ``frameNumber``, ``windowCenter``,
``windowWidth``, ``rows``, ``columns``, ``imageQuality``). The default is image/jpeg
for an image and application/dicom for anything else (PS3.18 9.1.2.5).
"""
from __future__ import annotations

from flask import Response, request

from . import transcoding
from appliance.convert.render import RenderParams

from .blueprint import audit, bp, read_access, require_export
from .context import ctx
from .errors import BadRequest, NotAcceptable


@bp.get("/wado")
@read_access
def wado_uri():
    args = request.args
    if args.get("requestType") != "WADO":
        raise BadRequest("requestType=WADO is required")
    missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not args.get(k)]
    if missing:
        raise BadRequest(f"missing parameter(s): {', '.join(missing)}")
    c = ctx()
    item = c.locate(args["studyUID"], args["seriesUID"], args["objectUID"])[0]
    # image/jpeg is the default for images; an object without pixels (SR, PDF, ...) comes as itself.
    default = "image/jpeg" if item.rows else "application/dicom"
    content_types = [t.strip().split(";")[0] for t in (args.get("contentType") or default).split(",")]
    for media in content_types:
        if media == "application/dicom":
            refused = require_export()
            if refused is not None:
                return refused
            ts = args.get("transferSyntax") or item.transfer_syntax
            if not transcoding.can_transcode(item.transfer_syntax, ts):
                raise NotAcceptable(f"this object cannot be sent in transfer syntax {ts[:64]}")
            audit("study.export", item.study_uid, patient_id=item.patient_id, detail="dicomweb wado-uri dicom")
            if ts == item.transfer_syntax:
                return Response(c.stream(item.object_id), 200, content_type="application/dicom")
            return Response(transcoding.to_syntax(c.object_bytes(item.object_id), item.transfer_syntax, ts), 200,
                            content_type="application/dicom")
        if media in ("image/jpeg", "image/png", "*/*", "image/*"):
            media = "image/png" if media == "image/png" else "image/jpeg"
            try:
                frame = int(args.get("frameNumber", "1")) - 1
                window = None
                if args.get("windowCenter") and args.get("windowWidth"):
                    window = f"{float(args['windowCenter'])},{float(args['windowWidth'])}"
                viewport = None
                if args.get("rows") or args.get("columns"):
                    viewport = f"{int(args.get('columns') or 8192)},{int(args.get('rows') or 8192)}"
                quality = args.get("imageQuality", "90")
            except ValueError:
                raise BadRequest("frameNumber, windowCenter, windowWidth, rows, columns must be numbers") from None
            if frame < 0:
                raise BadRequest("frameNumber starts at 1")
            params = RenderParams.parse({"window": window, "viewport": viewport, "quality": quality}, media)
            audit("dicomweb.retrieve", item.study_uid, patient_id=item.patient_id, detail="wado-uri rendered")
            return Response(c.renderer.render(item.object_id, frame, params), 200, content_type=media)
    raise NotAcceptable("contentType must be application/dicom, image/jpeg or image/png")
