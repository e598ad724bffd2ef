"""Admin page: replacements (appliance/ingest/versions.py, the policy in appliance/ingest/__init__.py).

Objects held for an admin (another patient under a stored SOP Instance UID) to accept or discard,
replaced versions to restore, and the recent replacements and refusals from the audit log.
"""
from __future__ import annotations

from flask import flash, redirect, render_template, url_for

from appliance.errors import ApplianceError

from ..auth import client_address, current_user, login_required
from ..current import appliance as _app
from . import bp


def _versions():
    return _app().versions


@bp.get("/admin/replacements")
@login_required("admin")
def replacements():
    versions = _versions()
    held = versions.list(held=True, limit=200)
    replaced = versions.list(held=False, limit=200)
    events = list(_app().audit.query(action="instance.replace", limit=100))
    return render_template("admin/replacements.html", title="Replacements", held=held, replaced=replaced,
                           events=events, policy=_app().config.storage)


def _act(fn, object_id: str, done: str):
    try:
        v = fn(object_id, current_user().username, client_address())
    except ApplianceError as exc:
        flash(str(exc), "error")
    else:
        flash(done.format(uid=v.sop_uid), "ok")
    return redirect(url_for("admin.replacements"))


@bp.post("/admin/replacements/<object_id>/restore")
@login_required("admin")
def replacement_restore(object_id):
    return _act(_versions().restore, object_id, "Instance {uid}: that version is now current; the one it "
                                                "replaced is kept as a version.")


@bp.post("/admin/replacements/<object_id>/discard")
@login_required("admin")
def replacement_discard(object_id):
    return _act(_versions().discard, object_id, "Instance {uid}: the held object was discarded.")
