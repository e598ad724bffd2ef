"""The admin UI: dashboard, DICOM peers, users, worklist, audit log, settings."""
from flask import Blueprint

bp = Blueprint("admin", __name__, template_folder="templates")

from . import failed_imports, replacements, update, views  # noqa: E402,F401
