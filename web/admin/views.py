from flask import render_template

from ..auth import VIEW_ROLES, login_required
from . import bp


@bp.get("/")
@login_required(*VIEW_ROLES)
def home():
    return render_template("base.html", title="Dashboard")


@bp.get("/admin/peers")
@login_required("admin")
def peers():
    return render_template("base.html", title="DICOM peers")


@bp.get("/admin/worklist")
@login_required("admin", "technologist")
def worklist():
    return render_template("base.html", title="Worklist")


@bp.get("/admin/users")
@login_required("admin")
def users():
    return render_template("base.html", title="Users")


@bp.get("/admin/audit")
@login_required("admin")
def audit():
    return render_template("base.html", title="Audit log")


@bp.get("/admin/settings")
@login_required("admin")
def settings():
    return render_template("base.html", title="Settings")
