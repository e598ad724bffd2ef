"""Admin pages. Each change goes through the same code as the CLI and is written to the audit log."""
from __future__ import annotations

import datetime

from flask import (Response, abort, current_app, flash, redirect, render_template, request, stream_with_context,
                   url_for)

from appliance.errors import ApplianceError
from appliance.index import utcnow
from appliance.records import accounts
from appliance.records.worklist import LIMITS as WORKLIST_LIMITS

from ..auth import VIEW_ROLES, audit, current_user, login_required
from ..current import appliance
from . import bp, config_edit, dashboard

AUDIT_PAGE = 100
MAX_AUDIT_PAGE = 10**6  # bigger page numbers overflowed SQLite's integer offset (a 500)
# Days the audit filters accept: the first and last days whose midnight, moved to UTC, stays
# within Python's datetimes (9999-12-31 plus a day overflowed: a 500).
AUDIT_FIRST_DAY, AUDIT_LAST_DAY = datetime.date(1900, 1, 1), datetime.date(9998, 12, 31)


def _fail(exc: Exception, endpoint: str, **values):
    flash(str(exc), "error")
    return redirect(url_for(endpoint, **values))


# --- dashboard ---------------------------------------------------------------------------------

@bp.get("/")
@login_required(*VIEW_ROLES)
def home():
    web = current_app.extensions["pacs_web"]
    data = dashboard.gather(appliance(), web.recent_errors, web.sessions)
    return render_template("admin/dashboard.html", title="Dashboard", d=data, now=utcnow(),
                           our_ae=appliance().config.dicom.ae_title)


# --- DICOM peers -------------------------------------------------------------------------------

def _peer_form() -> dict:
    f = request.form
    return dict(host=f.get("host", "").strip(), port=f.get("port", "").strip(),
                description=f.get("description", "").strip(),
                can_store="can_store" in f, can_query="can_query" in f, can_retrieve="can_retrieve" in f,
                can_receive_moves="can_receive_moves" in f, tls="tls" in f,
                cert_fingerprint=f.get("cert_fingerprint", "").strip())


def _forwarding() -> dict:
    """The forwarding queue per peer, with its last error and the failed jobs (shown on the peers page)."""
    forwarder = appliance().forwarder
    return {"forwarding": forwarder.status(), "failed_jobs": forwarder.failed()}


@bp.get("/admin/peers")
@login_required("admin")
def peers():
    registry = appliance().peers
    return render_template("admin/peers.html", title="DICOM peers",
                           peers=registry.list(), our_ae=appliance().config.dicom.ae_title,
                           our_port=appliance().config.dicom.port, dicom=appliance().config.dicom, edit=None,
                           **_forwarding())


@bp.post("/admin/forward/retry")
@login_required("admin")
def forward_retry():
    forwarder = appliance().forwarder
    destination = request.form.get("destination", "").strip() or None
    count = forwarder.retry_failed(destination)
    audit("forward.retry", detail=f"{count} job(s){' for ' + destination if destination else ''}")
    flash(f"{count} failed job(s) queued again.", "ok")
    return redirect(url_for("admin.peers"))


@bp.post("/admin/forward/drop")
@login_required("admin")
def forward_drop():
    forwarder = appliance().forwarder
    job_id = request.form.get("job_id", "").strip()
    destination = request.form.get("destination", "").strip() or None
    count = forwarder.drop(int(job_id) if job_id.isdigit() else None, destination)
    audit("forward.drop", detail=f"{count} job(s)" + (f", job {job_id}" if job_id else ""))
    flash(f"{count} job(s) dropped from the forwarding queue.", "ok")
    return redirect(url_for("admin.peers"))


@bp.get("/admin/peers/<ae_title>/edit")
@login_required("admin")
def peer_edit(ae_title):
    registry = appliance().peers
    peer = registry.get(ae_title) or abort(404)
    return render_template("admin/peers.html", title="DICOM peers", peers=registry.list(),
                           our_ae=appliance().config.dicom.ae_title, our_port=appliance().config.dicom.port,
                           dicom=appliance().config.dicom, edit=peer, **_forwarding())


@bp.post("/admin/peers")
@login_required("admin")
def peer_add():
    registry = appliance().peers
    ae_title = request.form.get("ae_title", "").strip()
    try:
        registry.add(ae_title, **_peer_form())
    except ApplianceError as exc:
        return _fail(exc, "admin.peers")
    audit("peer.add", detail=f"{ae_title} at {request.form.get('host', '').strip()}:{request.form.get('port')}")
    flash(f"Added {ae_title}. Press Test to check that it answers.", "ok")
    return redirect(url_for("admin.peers"))


@bp.post("/admin/peers/<ae_title>")
@login_required("admin")
def peer_update(ae_title):
    registry = appliance().peers
    try:
        registry.update(ae_title, **_peer_form())
    except ApplianceError as exc:
        return _fail(exc, "admin.peer_edit", ae_title=ae_title)
    audit("peer.update", detail=f"{ae_title} at {request.form.get('host', '').strip()}:{request.form.get('port')}")
    flash(f"Saved {ae_title}.", "ok")
    return redirect(url_for("admin.peers"))


@bp.post("/admin/peers/<ae_title>/delete")
@login_required("admin")
def peer_remove(ae_title):
    registry = appliance().peers
    try:
        registry.remove(ae_title)
    except ApplianceError as exc:
        return _fail(exc, "admin.peers")
    audit("peer.remove", detail=ae_title)
    flash(f"Removed {ae_title}.", "ok")
    return redirect(url_for("admin.peers"))


@bp.post("/admin/peers/<ae_title>/echo")
@login_required("admin")
def peer_echo(ae_title):
    registry = appliance().peers
    try:
        result = registry.echo(ae_title)
    except ApplianceError as exc:
        return _fail(exc, "admin.peers")
    audit("dicom.echo", detail=f"{ae_title}: {'ok' if result.ok else 'failed'}: {result.message}")
    if result.ok:
        flash(f"Echo OK: {result.message} in {result.millis:.0f} ms.", "ok")
    else:
        flash(f"Echo failed: {result.message}.", "error")
    return redirect(url_for("admin.peers"))


# --- users and API tokens ----------------------------------------------------------------------

def _users_page(new_token: str | None = None, status: int = 200):
    repo = appliance().index.accounts
    users = accounts.list_users(repo)
    by_user: dict[int, list] = {}
    for t in repo.active_tokens():
        by_user.setdefault(t.user_id, []).append(t)
    return render_template("admin/users.html", title="Users", users=users, tokens=by_user, roles=accounts.ROLES,
                           new_token=new_token, min_password=accounts.MIN_PASSWORD), status


def _change(fn, action: str, username: str, message: str, detail: str = ""):
    """Run ``fn(accounts repository)`` on the index writer, then audit and report."""
    index = appliance().index
    try:
        index.writer.run(lambda: fn(index.accounts))
    except ApplianceError as exc:
        return _fail(exc, "admin.users")
    audit(action, detail=f"{username}{': ' + detail if detail else ''}")
    flash(message, "ok")
    return redirect(url_for("admin.users"))


@bp.get("/admin/users")
@login_required("admin")
def users():
    return _users_page()


@bp.post("/admin/users")
@login_required("admin")
def user_add():
    f = request.form
    username, role = f.get("username", "").strip(), f.get("role", "")
    return _change(lambda repo: accounts.create_user(repo, username, f.get("password", ""), role), "user.create",
                   username, f"Created {username} ({role}).", detail=role)


@bp.post("/admin/users/<username>/password")
@login_required("admin")
def user_password(username):
    password = request.form.get("password", "")
    return _change(lambda repo: accounts.set_password(repo, username, password), "user.password", username,
                   f"Set a new password for {username}; their sessions and API tokens were ended.")


@bp.post("/admin/users/<username>/role")
@login_required("admin")
def user_role(username):
    role = request.form.get("role", "")
    return _change(lambda repo: accounts.set_role(repo, username, role), "user.role", username,
                   f"{username} is now {role}.", detail=role)


@bp.post("/admin/users/<username>/disable")
@login_required("admin")
def user_disable(username):
    if username == current_user().username:
        flash("You cannot disable yourself.", "error")
        return redirect(url_for("admin.users"))
    return _change(lambda repo: accounts.set_disabled(repo, username, True), "user.disable", username,
                   f"Disabled {username}; their sessions and API tokens were ended.")


@bp.post("/admin/users/<username>/enable")
@login_required("admin")
def user_enable(username):
    return _change(lambda repo: accounts.set_disabled(repo, username, False), "user.enable", username,
                   f"Enabled {username}.")


@bp.post("/admin/users/<username>/tokens")
@login_required("admin")
def token_create(username):
    name = request.form.get("name", "").strip()
    try:
        index = appliance().index
        token, _row = index.writer.run(lambda: accounts.create_api_token(index.accounts, username, name))
    except ApplianceError as exc:
        return _fail(exc, "admin.users")
    audit("token.create", detail=f"{username}: {name}")
    return _users_page(new_token=token)  # shown once, never stored


@bp.post("/admin/tokens/<int:token_id>/revoke")
@login_required("admin")
def token_revoke(token_id):
    row = appliance().index.accounts.token(token_id) or abort(404)
    return _change(lambda repo: accounts.revoke_api_token(repo, token_id), "token.revoke", row.username,
                   f"Revoked the token {row.prefix}… of {row.username}.", detail=row.prefix)


# --- worklist ----------------------------------------------------------------------------------

WORKLIST_FIELDS = ("patient_name", "patient_id", "birth_date", "sex", "accession", "modality", "station_ae",
                   "scheduled_date", "scheduled_time", "step_description", "requested_procedure_description",
                   "referring_physician", "performing_physician")


def _worklist_form() -> dict:
    values = {k: request.form.get(k, "").strip() for k in WORKLIST_FIELDS}
    if values["patient_name"]:
        values["patient_name"] = values["patient_name"].replace(", ", "^").replace(",", "^")
    return values


@bp.get("/admin/worklist")
@login_required("admin", "technologist")
def worklist():
    wl = appliance().worklist
    day = request.args.get("date", "").strip()
    if day:
        try:
            datetime.date.fromisoformat(day)
        except ValueError:
            abort(400, description="date must be a day as YYYY-MM-DD")
    date = day.replace("-", "") if day else datetime.date.today().strftime("%Y%m%d") + "-"
    items = []
    try:
        items = wl.list(date=date)
    except ApplianceError as exc:
        flash(str(exc), "error")
    edit_id = request.args.get("edit", "")
    if edit_id and not (edit_id.isascii() and edit_id.isdigit() and len(edit_id) <= 18):
        abort(400, description="edit must be the number of a worklist entry")
    edit = wl.get(int(edit_id)) if edit_id else None
    return render_template("admin/worklist.html", title="Worklist", items=items,
                           day=day, edit=edit, peers=appliance().peers.list(),
                           today=datetime.date.today().isoformat(), limits=WORKLIST_LIMITS)


@bp.post("/admin/worklist")
@login_required("admin", "technologist")
def worklist_add():
    wl = appliance().worklist
    values = _worklist_form()
    try:
        item = wl.add(**values)
    except ApplianceError as exc:
        return _fail(exc, "admin.worklist")
    audit("worklist.add", patient_id=item.patient_id, study_uid=item.study_uid,
          detail=f"{item.modality} {item.scheduled_date}")
    flash("Added the worklist entry.", "ok")
    return redirect(url_for("admin.worklist"))


@bp.post("/admin/worklist/<int:item_id>")
@login_required("admin", "technologist")
def worklist_update(item_id):
    wl = appliance().worklist
    values = _worklist_form()
    if request.form.get("status"):
        values["status"] = request.form["status"]
    try:
        item = wl.update(item_id, **values)
    except ApplianceError as exc:
        return _fail(exc, "admin.worklist", edit=item_id)
    audit("worklist.update", patient_id=item.patient_id, study_uid=item.study_uid, detail=item.status)
    flash("Saved the worklist entry.", "ok")
    return redirect(url_for("admin.worklist"))


@bp.post("/admin/worklist/<int:item_id>/delete")
@login_required("admin", "technologist")
def worklist_remove(item_id):
    wl = appliance().worklist
    try:
        item = wl.require(item_id)
        wl.remove(item_id)
    except ApplianceError as exc:
        return _fail(exc, "admin.worklist")
    audit("worklist.remove", patient_id=item.patient_id, study_uid=item.study_uid)
    flash("Deleted the worklist entry.", "ok")
    return redirect(url_for("admin.worklist"))


# --- audit log ---------------------------------------------------------------------------------

def _audit_filters() -> dict:
    a = request.args
    filters = {k: a.get(k, "").strip() for k in ("actor", "action", "patient_id", "study_uid")}
    for name in ("since", "until"):
        text = a.get(name, "").strip()
        if text:
            try:
                day = datetime.date.fromisoformat(text)
                if not AUDIT_FIRST_DAY <= day <= AUDIT_LAST_DAY:
                    raise ValueError(day)
            except ValueError:
                flash(f"{name}: give a date as YYYY-MM-DD between {AUDIT_FIRST_DAY} and {AUDIT_LAST_DAY}", "error")
                continue
            # A day in the box's time zone, as the naive UTC the index stores.
            local_midnight = datetime.datetime.combine(day + datetime.timedelta(days=1 if name == "until" else 0),
                                                       datetime.time()).astimezone()
            filters[name] = local_midnight.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return {k: v for k, v in filters.items() if v}


@bp.get("/admin/audit")
@login_required("admin")
def audit_log():
    log = appliance().audit
    filters = _audit_filters()
    page_text = request.args.get("page", "1")
    page = max(int(page_text) if page_text.isascii() and page_text.isdigit() else 1, 1)
    if page > MAX_AUDIT_PAGE:
        abort(400, description=f"page must be at most {MAX_AUDIT_PAGE}")
    entries = list(log.query(**filters, limit=AUDIT_PAGE + 1, offset=(page - 1) * AUDIT_PAGE))
    verification = log.verify() if request.args.get("verify") else None
    args = {k: v for k, v in request.args.items() if k not in ("page", "verify")}
    return render_template("admin/audit.html", title="Audit log", entries=entries[:AUDIT_PAGE],
                           more=len(entries) > AUDIT_PAGE, page=page, args=args, verification=verification)


@bp.get("/admin/audit.csv")
@login_required("admin")
def audit_csv():
    log = appliance().audit
    filters = _audit_filters()
    audit("audit.export", detail=", ".join(f"{k}={v}" for k, v in filters.items()))
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    return Response(stream_with_context(log.export_csv(log.query(**filters, limit=None, newest_first=False))),
                    mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'})


# --- settings ----------------------------------------------------------------------------------

@bp.get("/admin/settings")
@login_required("admin")
def settings():
    from appliance.config import SETTINGS

    cfg = appliance().config
    in_file = config_edit.file_values(cfg.config_path)
    rows = []
    for s in SETTINGS:
        value = getattr(getattr(cfg, s.section), s.key)
        if "token" in s.key or "secret" in s.key:
            value = "(set)" if value else ""
        saved = in_file.get(s.section, {}).get(s.key, s.default)
        rows.append({"section": s.section, "key": s.key, "value": value, "help": s.help,
                     "source": cfg.sources.get(f"{s.section}.{s.key}", "default"), "env": s.env_name,
                     "editable": (s.section, s.key) in config_edit.EDITABLE,
                     "pending": (s.section, s.key) in config_edit.EDITABLE and saved != value
                     and not cfg.sources.get(f"{s.section}.{s.key}", "").startswith("$")})
    return render_template("admin/settings.html", title="Settings", rows=rows, config_path=cfg.config_path,
                           data_dir=cfg.data_dir)


@bp.post("/admin/settings")
@login_required("admin")
def settings_save():
    cfg = appliance().config
    section, key = request.form.get("section", ""), request.form.get("key", "")
    if (section, key) not in config_edit.EDITABLE:
        abort(400)
    try:
        s = config_edit.setting(section, key)
        value = config_edit.parse_form_value(s, request.form.get("value", ""))
        config_edit.set_value(cfg.config_path, section, key, value)
    except ApplianceError as exc:
        return _fail(exc, "admin.settings")
    audit("config.change", detail=f"[{section}] {key} = {value!r}")
    flash(f"Saved [{section}] {key} to {cfg.config_path.name}. Restart the appliance to apply it.", "ok")
    return redirect(url_for("admin.settings"))


@bp.post("/admin/settings/backup-test")
@login_required("admin")
def backup_test():
    """Write, read back and delete a probe object on the backup target typed in the form (not yet saved)."""
    from .backup_probe import probe

    url = request.form.get("value", "").strip()
    backup = appliance().backup
    try:
        config_edit.parse_form_value(config_edit.setting("backup", "target"), url)
        message = probe(backup, url)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer the admin asked for
        audit("backup.test", detail=f"failed: {exc.__class__.__name__}")
        flash(f"Backup target test failed: {exc}", "error")
        return redirect(url_for("admin.settings"))
    audit("backup.test", detail="ok")
    flash(message, "ok")
    return redirect(url_for("admin.settings"))
