"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related; type="application/dicom".

Each part goes through the one ingest path (``Ingestor.store``), as it arrives:
the body is read part by part and each part is held in memory only. The response
is a DICOM JSON dataset listing what was stored (ReferencedSOPSequence) and what
was not (FailedSOPSequence, with the DICOM FailureReason the ingest raised).

Status: 200 when every instance was stored, 202 when some were and some failed,
409 when none was stored (503 with Retry-After when the disk below its reserve
refused them all: the client should send again later, unlike a real conflict),
400 for a body that is not a well-formed multipart, 415 for a media type other
than application/dicom.
"""
from __future__ import annotations

import io
import logging

import pydicom
from flask import request

from appliance.errors import ApplianceError, CANNOT_UNDERSTAND, OUT_OF_RESOURCES, PROCESSING_FAILURE, DiskFull
from appliance.ingest import Origin

from . import multipart
from .accept import parse_media_type
from .blueprint import actor, audit, base_url, bp, json_response, store_access
from .context import check_uid, ctx
from .errors import BadRequest, UnsupportedMediaType

log = logging.getLogger(__name__)
RETRY_AFTER_FULL_DISK = 300  # seconds: freeing space takes a person

STUDY_UID_MISMATCH = 0xA900  # the instance does not belong to the study named in the URL


def _identify(body: bytes) -> tuple[str, str, str]:
    """SOP Class, SOP Instance and Study UIDs of a part, for the response ('' when unreadable)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True, force=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"])
        return (str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or ""),
                str(ds.get("StudyInstanceUID", "") or ""))
    except Exception:  # noqa: BLE001 - an unreadable part is reported by the ingest itself
        return "", "", ""


def _sop_ref(sop_class: str, sop_uid: str) -> dict:
    ref: dict = {}
    if sop_class:
        ref["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_uid:
        ref["00081155"] = {"vr": "UI", "Value": [sop_uid]}
    return ref


def _store(study_in_path: str | None):
    if study_in_path is not None:
        check_uid(study_in_path, "Study Instance UID")
    content_type = request.headers.get("Content-Type", "")
    media = parse_media_type(content_type)
    if media.type != "multipart/related":
        raise UnsupportedMediaType('STOW-RS takes Content-Type multipart/related; type="application/dicom"')
    if media.params.get("type", "application/dicom") != "application/dicom":
        raise UnsupportedMediaType(f"only application/dicom parts can be stored, not {media.params['type']}")
    boundary = multipart.boundary_of(content_type)
    c = ctx()
    max_part = c.appliance.config.dicomweb.stow_max_part_mb << 20
    origin = Origin("stow", f"{actor()}@{request.remote_addr or ''}")
    root = base_url()
    stored, failed, studies, warnings = [], [], [], []
    parts = multipart.iter_parts(request.stream, boundary, max_part)
    while True:
        try:
            part = next(parts, None)
        except BadRequest as exc:
            if not stored and not failed:
                raise
            warnings.append(f"the rest of the body was not read: {exc}")
            break
        if part is None:
            break
        headers, body = part
        part_type = parse_media_type(headers.get("content-type", "application/dicom")).type
        sop_class, sop_uid, study_uid = _identify(body)
        if part_type not in ("application/dicom", ""):
            failed.append((sop_class, sop_uid, CANNOT_UNDERSTAND))
            warnings.append(f"a part of type {part_type[:60]} was not stored: only application/dicom is accepted")
            continue
        if study_in_path is not None and study_uid != study_in_path:
            failed.append((sop_class, sop_uid, STUDY_UID_MISMATCH))
            warnings.append("an instance of another study than the one in the URL was not stored")
            continue
        try:
            result = c.appliance.ingestor.store_bytes(body, origin)
        except ApplianceError as exc:
            failed.append((sop_class, sop_uid, getattr(exc, "dimse_status", PROCESSING_FAILURE)))
            warnings.append(str(exc))
            continue
        except Exception:  # noqa: BLE001 - one bad part must not lose the report for the others
            log.exception("STOW-RS: storing a part failed")
            failed.append((sop_class, sop_uid, PROCESSING_FAILURE))
            continue
        ref = _sop_ref(result.sop_class_uid, result.sop_uid)
        ref["00081190"] = {"vr": "UR", "Value": [
            f"{root}/studies/{result.study_uid}/series/{result.series_uid}/instances/{result.sop_uid}"]}
        stored.append(ref)
        if result.study_uid not in studies:
            studies.append(result.study_uid)
    if not stored and not failed:
        raise BadRequest("the multipart body holds no parts: nothing was stored")

    response: dict = {}
    if len(studies) == 1 or study_in_path:
        response["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{study_in_path or studies[0]}"]}
    if failed:
        items = []
        for sop_class, sop_uid, reason in failed:
            item = _sop_ref(sop_class, sop_uid)
            item["00081197"] = {"vr": "US", "Value": [reason]}
            items.append(item)
        response["00081198"] = {"vr": "SQ", "Value": items}
    response["00081199"] = {"vr": "SQ", "Value": stored}
    status = 200 if not failed else 202 if stored else 409
    if status == 409 and all(reason == OUT_OF_RESOURCES for _c, _u, reason in failed):
        status = DiskFull.http_status
    audit("dicomweb.store", study_uid=studies[0] if len(studies) == 1 else (study_in_path or ""),
          detail=f"stored={len(stored)} failed={len(failed)} studies={len(studies)}")
    response = json_response(response, status, warnings=[w.replace('"', "'")[:200] for w in warnings])
    if status == DiskFull.http_status:
        response.headers["Retry-After"] = str(RETRY_AFTER_FULL_DISK)
    return response


@bp.post("/studies")
@store_access
def store_instances():
    return _store(None)


@bp.post("/studies/<study>")
@store_access
def store_study_instances(study):
    return _store(study)
