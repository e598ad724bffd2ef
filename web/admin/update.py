"""Admin page "Software update": upload a signed update bundle.

The upload is checked here with the same ``bundle.verify`` the USB and scheduled
paths use, so a bad bundle is refused at once with the reason; a good one is moved
into ``<data>/update-incoming``, where the root-run ``pacs-appliance-update.path``
picks it up, checks it again, writes it to the other root slot and reboots.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from flask import flash, redirect, render_template, request, url_for

from appliance.update.bundle import BUNDLE_SUFFIX, BundleRefused, verify
from appliance.update.service import VERSION_FILE, UpdatePaths, read_json

from ..auth import audit, bulk_upload, login_required
from ..current import appliance
from . import bp

MAX_BUNDLE_BYTES = 4 << 30  # a bundle carries a whole root file system (~300 MiB today)


def _paths() -> UpdatePaths:
    data_dir = appliance().config.data_dir
    return UpdatePaths(Path(data_dir).parent)


def _partial_dir() -> Path:
    """Where an upload is received and checked: beside incoming/, on its file system, never watched."""
    paths = _paths()
    partial_dir = paths.incoming_dir.with_name(paths.incoming_dir.name + ".partial")
    partial_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    return partial_dir


def _keyring() -> Path:
    """The vendor certificate the image trusts: ``[update] keyring``."""
    return Path(appliance().config.update.keyring)


@bp.get("/admin/update")
@login_required("admin")
def update_page():
    paths = _paths()
    try:
        running = VERSION_FILE.read_text().strip()
    except OSError:
        running = "not an appliance image (a checkout)"
    return render_template("admin/update.html", title="Software update", running=running,
                           last=read_json(paths.status_file), pending=read_json(paths.pending_file),
                           waiting=sorted(p.name for p in paths.incoming_dir.glob(f"*{BUNDLE_SUFFIX}"))
                           if paths.incoming_dir.is_dir() else [])


@bp.post("/admin/update")
@bulk_upload("admin", MAX_BUNDLE_BYTES, _partial_dir)
@login_required("admin")
def update_upload():
    upload = request.files.get("bundle")
    if upload is None or not upload.filename:
        flash("Choose the update file (.raucb) from the vendor first.", "error")
        return redirect(url_for("admin.update_page"))
    paths = _paths()
    partial = _partial_dir() / f"{uuid.uuid4().hex}{BUNDLE_SUFFIX}"
    try:
        upload.save(partial)
        info = verify(partial, keyring=_keyring())
    except BundleRefused as exc:
        partial.unlink(missing_ok=True)
        audit("update.refused", detail=str(exc)[:300])
        flash(f"Not installed: {exc}", "error")
        return redirect(url_for("admin.update_page"))
    paths.incoming_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.replace(partial, paths.incoming_dir / partial.name)  # same file system: the watcher sees it whole
    audit("update.uploaded", detail=f"version {info.version}, signed by {info.signer}")
    flash(f"Update {info.version} checked and accepted: it is being installed; the box restarts into it "
          "in a few minutes and goes back to the current version by itself if it does not start.", "ok")
    return redirect(url_for("admin.update_page"))
