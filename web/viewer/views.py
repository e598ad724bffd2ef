"""Viewer pages: find a study, open it, read it, hand it to the patient.

Viewing is open to every role; downloading and exporting media is for admins
and clinicians (a technologist sees images but does not hand them out). Every
study opened, downloaded or exported is audited.
"""
from __future__ import annotations

import datetime
import re

from flask import Response, abort, current_app, jsonify, redirect, render_template, request, stream_with_context, url_for

from appliance.errors import ApplianceError

from ..auth import VIEW_ROLES, audit, login_required
from ..current import appliance as _app
from . import bp, images
from .export import media_zip, stream_zip
from .search import MODALITIES, PAGE_SIZE, StudySearch

EXPORT_ROLES = ("admin", "clinician")
MAX_PAGE = 10**6  # a bigger page number overflowed SQLite's integer offset (a 500)
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _study_or_404(study_uid: str) -> dict:
    """The study's record; one recycled to free space has ``_offsite`` set (its only copy is offsite)."""
    if not UID.match(study_uid) or len(study_uid) > 64:
        abort(404)
    found = _app().index.search("STUDY", {"StudyInstanceUID": study_uid}, limit=1, include_offsite=True)
    if not found:
        abort(404)
    return found[0]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40].strip("_") or "study"


@bp.get("/studies")
@login_required(*VIEW_ROLES)
def studies():
    form = StudySearch.from_args(request.args)
    if form.page > MAX_PAGE:
        abort(400, description=f"page must be at most {MAX_PAGE}")
    index = _app().index
    criteria = form.criteria()
    # People type names in any order and case, and IDs in lower case: fuzzy names, case-blind IDs.
    how = {"fuzzy": True, "case_sensitive_ids": False, "include_offsite": True}
    total = index.count("STUDY", criteria, **how)
    rows = index.search("STUDY", criteria, limit=PAGE_SIZE, offset=(form.page - 1) * PAGE_SIZE, **how)
    pages = max(1, -(-total // PAGE_SIZE))
    return render_template("viewer/studies.html", title="Studies", form=form, rows=rows, total=total,
                           pages=pages, modalities=MODALITIES, today=datetime.date.today().isoformat(),
                           can_restore=_can_export())


@bp.get("/patient")
@login_required(*VIEW_ROLES)
def patient():
    patient_id = (request.args.get("id") or "")[:64]
    rows = _app().index.search("STUDY", {"PatientID": patient_id}, include_offsite=True) if patient_id else []
    rows = [r for r in rows if r["PatientID"] == patient_id]  # exact, even if the ID holds wildcards
    if not rows:
        abort(404)
    audit("patient.view", patient_id=patient_id, detail=f"studies={len(rows)}")
    return render_template("viewer/patient.html", title="Patient", patient=rows[0], rows=rows,
                           can_restore=_can_export())


@bp.get("/studies/<study_uid>")
@login_required(*VIEW_ROLES)
def study(study_uid):
    record = _study_or_404(study_uid)
    if request.args.get("restoring") and not record.get("_offsite"):
        return redirect(url_for("viewer.viewer", study_uid=study_uid))  # back already: straight to the images
    index = _app().index
    series = [] if record.get("_offsite") else index.search("SERIES", {"StudyInstanceUID": study_uid})
    priors = [r for r in index.search("STUDY", {"PatientID": record["PatientID"]}, include_offsite=True)
              if r["StudyInstanceUID"] != study_uid and r["PatientID"] == record["PatientID"]]
    audit("study.view", study_uid=study_uid, patient_id=record["PatientID"])
    return render_template("viewer/study.html", title="Study", s=record, series=series, priors=priors,
                           can_export=_can_export() and not record.get("_offsite"), can_restore=_can_export(),
                           restore=_restores().status(study_uid) if record.get("_offsite") else None,
                           ohif_installed=_ohif_installed())


def _ohif_installed() -> bool:
    from ..ohif import is_installed

    return is_installed()


def _restores():
    """The bring-backs started from the browser (one set per app)."""
    from .restore import Restores

    app = current_app
    if "viewer_restores" not in app.extensions:
        app.extensions["viewer_restores"] = Restores(_app().recycler)
    return app.extensions["viewer_restores"]


@bp.post("/studies/<study_uid>/restore")
@login_required(*EXPORT_ROLES)
def restore(study_uid):
    """Bring an offsite-only study back (admins and clinicians: a doctor needs last year's study now)."""
    record = _study_or_404(study_uid)
    if not record.get("_offsite"):
        return redirect(url_for("viewer.viewer", study_uid=study_uid))
    from ..auth import current_user

    audit("study.restore", study_uid=study_uid, patient_id=record["PatientID"], detail="requested in the browser")
    _restores().start(study_uid, actor=current_user().username)
    return redirect(url_for("viewer.study", study_uid=study_uid, restoring=1))


@bp.get("/studies/<study_uid>/restore")
@login_required(*VIEW_ROLES)
def restore_status(study_uid):
    """How far bringing the study back has got (the study page polls this)."""
    if not UID.match(study_uid):
        abort(404)
    status = _restores().status(study_uid)
    if status is None:
        abort(404)
    return jsonify(status)


def _can_export() -> bool:
    from ..auth import current_user

    user = current_user()
    return user is not None and user.role in EXPORT_ROLES


@bp.get("/studies/<study_uid>/download.zip")
@login_required(*EXPORT_ROLES)
def download(study_uid):
    record = _study_or_404(study_uid)
    items = [(f"{r.series_uid}/{r.sop_uid}.dcm", r.object_id)
             for r in _app().index.studies.study_instances(study_uid)]
    audit("study.export", study_uid=study_uid, patient_id=record["PatientID"], detail=f"zip instances={len(items)}")
    archive = _app().archive
    name = _safe_name(f"{record['PatientID']}_{record['StudyDate']}")
    return Response(stream_with_context(stream_zip(archive, items)), mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}.zip"'})


@bp.get("/studies/<study_uid>/media.zip")
@login_required(*EXPORT_ROLES)
def media(study_uid):
    record = _study_or_404(study_uid)
    object_ids = [r.object_id for r in _app().index.studies.study_instances(study_uid)]
    try:
        data = media_zip(_app().archive, object_ids)
    except ApplianceError as exc:
        return render_template("error.html", title="Export failed", message=str(exc)), exc.http_status
    audit("study.export", study_uid=study_uid, patient_id=record["PatientID"],
          detail=f"dicomdir instances={len(object_ids)}")
    name = _safe_name(f"{record['PatientID']}_{record['StudyDate']}_media")
    return Response(data, mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}.zip"'})


@bp.get("/view/<study_uid>")
@login_required(*VIEW_ROLES)
def viewer(study_uid):
    record = _study_or_404(study_uid)
    if record.get("_offsite"):  # nothing to show until it is back: the study page offers to bring it back
        return redirect(url_for("viewer.study", study_uid=study_uid))
    audit("study.view", study_uid=study_uid, patient_id=record["PatientID"], detail="viewer")
    return render_template("viewer/viewer.html", title="Viewer", s=record)


@bp.get("/viewer/api/studies/<study_uid>")
@login_required(*VIEW_ROLES)
def study_json(study_uid):
    """Series and instances of a study plus the patient's other studies, for the viewer script."""
    record = _study_or_404(study_uid)
    index = _app().index
    # Counts only: the viewer asks for each series' images when it opens it (images.py), so a study of
    # many 1,000-slice series costs no more here than a small one.
    series = [{"uid": s["SeriesInstanceUID"], "number": s["SeriesNumber"], "modality": s["Modality"],
               "description": s["SeriesDescription"], "count": s["NumberOfSeriesRelatedInstances"]}
              for s in index.search("SERIES", {"StudyInstanceUID": study_uid})]
    priors = [{"uid": r["StudyInstanceUID"], "date": r["StudyDate"], "description": r["StudyDescription"],
               "modalities": r["ModalitiesInStudy"], "offsite": bool(r.get("_offsite"))}
              for r in index.search("STUDY", {"PatientID": record["PatientID"]}, include_offsite=True)
              if r["PatientID"] == record["PatientID"]]
    return jsonify(study={"uid": study_uid, "date": record["StudyDate"], "description": record["StudyDescription"],
                          "patient": str(record["PatientName"]), "patient_id": record["PatientID"]},
                   series=series, studies=priors)


@bp.get("/viewer/api/studies/<study_uid>/series/<series_uid>/images")
@login_required(*VIEW_ROLES)
def series_images(study_uid, series_uid):
    """A page of the attributes the viewer draws with (see images.py); the first page lists every image."""
    from ..dicomweb.context import ctx

    try:
        offset = max(0, int(request.args.get("offset", 0)))
        limit = int(request.args.get("limit", 50))
    except ValueError:
        abort(400, "offset and limit must be whole numbers")
    try:
        return jsonify(images.page(ctx(), study_uid, series_uid, offset, limit))
    except ApplianceError as exc:
        abort(exc.http_status or 500, str(exc))


@bp.get("/viewer/api/instances/<sop_uid>/tags")
@login_required(*VIEW_ROLES)
def tags(sop_uid):
    """The header of one instance as rows of tag, name, VR and a short value (the tag panel)."""
    import io

    import pydicom

    if not UID.match(sop_uid):
        abort(404)
    row = _app().index.studies.find_instance(sop_uid)
    if row is None:
        abort(404)
    first = b"".join(_head(_app().archive.iter_chunks(row.object_id), 4 << 20))
    ds = pydicom.dcmread(io.BytesIO(first), stop_before_pixels=True, force=True)
    rows = []
    for elem in [*ds.file_meta, *ds] if hasattr(ds, "file_meta") else ds:
        rows.extend(_tag_rows(elem, 0))
    return jsonify(tags=rows)


def _head(chunks, limit: int):
    total = 0
    for chunk in chunks:
        yield chunk
        total += len(chunk)
        if total >= limit:
            return


def _tag_rows(elem, depth: int) -> list[dict]:
    tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
    if elem.VR == "SQ":
        rows = [{"tag": tag, "name": elem.name, "vr": "SQ", "value": f"{len(elem.value)} item(s)", "depth": depth}]
        for item in elem.value:
            for sub in item:
                rows.extend(_tag_rows(sub, depth + 1))
        return rows
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or elem.tag == 0x7FE00010:
        value = f"<{elem.VR} {len(elem.value or b'')} bytes>" if elem.value is not None else ""
    else:
        value = str(elem.value)
    return [{"tag": tag, "name": elem.name, "vr": elem.VR, "value": value[:200], "depth": depth}]
