"""Fixing a study from its page (issue 22): the study page's "Fix…" button opens one page with every
correction, each a form of its own that needs a reason; the recycle bin page restores deletions.

Who may do what: correcting attributes, moving a study to another patient, applying a worklist entry
and moving or splitting a series are for admins and technologists (the technologist who picked the
wrong patient at the machine is the one who notices; the originals stay recoverable and every change
is audited). Merging patients and deleting are for admins; an anonymized copy is an export (admins
and clinicians, as for the other exports).
"""
from flask import Blueprint

bp = Blueprint("fix", __name__)

from . import views  # noqa: E402,F401 - registers the routes
