"""The Fix page of a study and its actions; the recycle bin page."""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

from flask import Response, abort, flash, redirect, render_template, request, stream_with_context, url_for

from appliance.corrections import anonymized_copies_of, corrections_of, recycle_bin_of
from appliance.corrections.edit import EDITABLE
from appliance.errors import ApplianceError

from ..auth import client_address, current_user, login_required
from ..current import appliance as _app
from . import bp

CORRECT_ROLES = ("admin", "technologist")
ADMIN = ("admin",)
EXPORT_ROLES = ("admin", "clinician")
FIX_ROLES = ("admin", "technologist", "clinician")  # each sees the forms its role allows
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _uid(value: str) -> str:
    if not UID.match(value or "") or len(value) > 64:
        abort(404)
    return value


def _study(study_uid: str) -> dict:
    found = _app().index.search("STUDY", {"StudyInstanceUID": _uid(study_uid)}, limit=1)
    if not found:
        abort(404)
    return found[0]


class Who(NamedTuple):
    """Who asks for a correction, from where, and why (each correction records all three)."""
    name: str
    address: str
    reason: str


def _done(message: str, study_uid: str | None):
    flash(message, "ok")
    if study_uid and _app().index.search("STUDY", {"StudyInstanceUID": study_uid}, limit=1):
        return redirect(url_for("viewer.study", study_uid=study_uid))
    return redirect(url_for("viewer.studies"))


def _failed(exc: ApplianceError, study_uid: str):
    flash(str(exc), "error")
    return redirect(url_for("fix.page", study_uid=study_uid))


def study_action(rule: str, roles: tuple[str, ...]):
    """A form action of a study's Fix page: POST /studies/<uid>/fix/<rule> for ``roles``.

    The view gets the study (404 if there is none) and who asks; a refusal (ApplianceError) goes back
    to the Fix page as a message.
    """
    def register(view):
        @bp.post(f"/studies/<study_uid>/fix/{rule}", endpoint=view.__name__)
        @login_required(*roles)
        @functools.wraps(view)
        def run(study_uid):
            study = _study(study_uid)
            who = Who(current_user().username, client_address(), request.form.get("reason", ""))
            try:
                return view(study, who)
            except ApplianceError as exc:
                return _failed(exc, study_uid)
        return run
    return register


@bp.get("/studies/<study_uid>/fix")
@login_required(*FIX_ROLES)
def page(study_uid):
    s = _study(study_uid)
    app = _app()
    series = app.index.search("SERIES", {"StudyInstanceUID": study_uid})
    role = current_user().role
    worklist = app.worklist.list(status="SCHEDULED") if role in CORRECT_ROLES else []
    return render_template("corrections/fix.html", title="Fix this study", s=s, series=series, role=role,
                           can_correct=role in CORRECT_ROLES, is_admin=role == "admin",
                           can_export=role in EXPORT_ROLES, worklist=worklist[:200], editable=EDITABLE,
                           peers=[p for p in app.peers.list() if p.can_receive_moves] if role in EXPORT_ROLES else [])


@study_action("edit", CORRECT_ROLES)
def edit(s, who: Who):
    study_uid = s["StudyInstanceUID"]
    changes = {k: request.form[k] for k in EDITABLE if k in request.form}
    changes = {k: v for k, v in changes.items() if v.strip() != str(s.get(k) or "")}
    r = corrections_of(_app()).edit_study(study_uid, changes, who.name, who.reason, who.address)
    return _done(f"Corrected {r.instances} image(s): {', '.join(r.after)}.", study_uid)


@study_action("move", CORRECT_ROLES)
def move(s, who: Who):
    study_uid = s["StudyInstanceUID"]
    r = corrections_of(_app()).move_study(study_uid, request.form.get("patient_id", "").strip(), who.name,
                                          who.reason, who.address)
    return _done(f"Moved {r.instances} image(s) to patient {r.after.get('PatientID', '')}.", study_uid)


@study_action("worklist", CORRECT_ROLES)
def worklist(s, who: Who):
    study_uid = s["StudyInstanceUID"]
    try:
        item = _app().worklist.require(int(request.form.get("item_id", "0") or 0))
    except ValueError:
        abort(400)
    r = corrections_of(_app()).apply_worklist(study_uid, item, who.name, who.reason, who.address)
    return _done(f"Worklist entry applied to {r.instances} image(s).", study_uid)


@study_action("series", CORRECT_ROLES)
def series(s, who: Who):
    series_uid = _uid(request.form.get("series_uid", ""))
    target = request.form.get("to_study", "").strip()
    r = corrections_of(_app()).move_series(series_uid, _uid(target) if target else None, who.name, who.reason,
                                           who.address)
    return _done(f"Series moved ({r.instances} image(s)) to study {r.study_uids[1]}.", s["StudyInstanceUID"])


@study_action("merge", ADMIN)
def merge(s, who: Who):
    into = request.form.get("into", "").strip()
    results = corrections_of(_app()).merge_patients(s["PatientID"], into, who.name, who.reason, who.address)
    return _done(f"Merged: {len(results)} study(ies) moved to patient {into}.", s["StudyInstanceUID"])


@study_action("delete", ADMIN)
def delete(s, who: Who):
    study_uid = s["StudyInstanceUID"]
    uid = _uid(request.form.get("uid") or study_uid)
    level = request.form.get("level", "auto")
    if level == "auto":  # the form's one list: the study itself or one of its series
        level = "study" if uid == study_uid else "series"
    e = recycle_bin_of(_app()).delete(level, uid, who.name, who.reason, who.address)
    return _done(f"Deleted {e.level} ({e.instances} image(s)); restorable from the recycle bin until "
                 f"{e.purge_after:%Y-%m-%d}.", study_uid)


@study_action("anonymized.zip", EXPORT_ROLES)
def anonymized(s, who: Who):
    copies = anonymized_copies_of(_app())
    objects, export, _warnings = copies.prepare(s["StudyInstanceUID"], who.name, who.reason, who.address)
    return Response(stream_with_context(copies.stream_zip(objects, export)), mimetype="application/zip",
                    headers={"Content-Disposition": 'attachment; filename="anonymized.zip"'})


@study_action("anonymized-send", EXPORT_ROLES)
def anonymized_send(s, who: Who):
    app = _app()
    peer = request.form.get("peer", "")
    sent, failed, warnings = anonymized_copies_of(app).send(
        s["StudyInstanceUID"], peer, app.peers, app.config.dicom.ae_title, who.name, who.reason, who.address,
        timeout=app.config.dicom.dimse_timeout)
    for w in warnings:
        flash(w, "warn")
    if failed:
        flash(f"{len(failed)} image(s) not sent: {failed[0]}", "error")
    return _done(f"Anonymized copy: {sent} image(s) sent to {peer}.", s["StudyInstanceUID"])


@bp.get("/recycle-bin")
@login_required(*ADMIN)
def recycle_bin():
    return render_template("corrections/bin.html", title="Recycle bin", entries=recycle_bin_of(_app()).list(),
                           days=_app().config.storage.recycle_bin_days)


@bp.post("/recycle-bin/<batch>/restore")
@login_required(*ADMIN)
def restore(batch):
    if not re.fullmatch(r"[0-9a-f]{32}", batch):
        abort(404)
    try:
        e = recycle_bin_of(_app()).restore(batch, current_user().username, client_address())
    except ApplianceError as exc:
        flash(str(exc), "error")
        return redirect(url_for("fix.recycle_bin"))
    return _done(f"Restored {e.level} ({e.instances} image(s)).", e.study_uid)
