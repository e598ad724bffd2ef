"""Admin page: failed imports in the encrypted quarantine (appliance/importer/failed.py).

List them with their reasons, retry (after fixing the cause), download the original file (plaintext:
audited as import.failed.export, like the CLI's export) or delete. Admins only: names and files may
carry patient data.
"""
from __future__ import annotations

from urllib.parse import quote

from flask import Response, abort, flash, redirect, render_template, request, url_for

from appliance.errors import ApplianceError

from ..auth import client_address, current_user, login_required
from ..current import appliance
from . import bp


def _failed():
    return appliance().failed_imports


@bp.get("/admin/failed-imports")
@login_required("admin")
def failed_imports():
    return render_template("admin/failed_imports.html", title="Failed imports", items=_failed().list())


@bp.post("/admin/failed-imports/retry")
@login_required("admin")
def failed_imports_retry():
    failed = _failed()
    ids = request.form.getlist("item") or [i.item_id for i in failed.list()]
    done = again = 0
    for item_id in ids[:1000]:
        try:
            result = failed.retry(item_id, current_user().username, client_address())
        except ApplianceError as exc:
            flash(str(exc), "error")
            continue
        done += result.imported
        again += not result.imported
        if not result.imported and len(ids) == 1:
            flash(f"Failed again: {result.summary.splitlines()[0]}", "error")
    if done or not again:
        flash(f"{done} failed import(s) are now in the archive" + (f"; {again} failed again" if again else "."),
              "ok" if not again else "error")
    elif len(ids) > 1:
        flash(f"All {again} failed again: see the reasons below.", "error")
    return redirect(url_for("admin.failed_imports"))


@bp.post("/admin/failed-imports/<item_id>/delete")
@login_required("admin")
def failed_imports_delete(item_id):
    try:
        item = _failed().delete(item_id, current_user().username, client_address())
    except ApplianceError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Deleted the failed import {item.name}.", "ok")
    return redirect(url_for("admin.failed_imports"))


@bp.get("/admin/failed-imports/<item_id>/file")
@login_required("admin")
def failed_imports_download(item_id):
    """The original file, decrypted (audited before it is sent)."""
    try:
        item, chunks = _failed().export(item_id, current_user().username, client_address())
    except ApplianceError as exc:
        abort(getattr(exc, "http_status", 404) or 404)
    name = item.name.rsplit("/", 1)[-1] or item_id
    return Response(chunks, mimetype="application/octet-stream",
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
                             "Cache-Control": "no-store"})
