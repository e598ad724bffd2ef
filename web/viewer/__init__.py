"""The clinic viewer: study list, patient and study pages, the image viewer, and media export.

Pages read through the shared query engine (``appliance.index``) and images come
through the box's own DICOMweb endpoints, so the viewer sees exactly what any
other DICOMweb client sees.
"""
from flask import Blueprint

bp = Blueprint("viewer", __name__)


@bp.record_once
def _sweep_media_staging(_state) -> None:
    """Start-up: remove plaintext staging left in /dev/shm by a media export that was killed."""
    from .export import sweep_stale

    sweep_stale()


@bp.app_template_filter("pn")
def person_name(value) -> str:
    """DICOM PN "DOE^JANE^^DR" as "DOE, JANE"."""
    parts = [p for p in str(value or "").split("=")[0].split("^")]
    family, given = (parts + ["", ""])[:2]
    return f"{family}, {given}".strip(", ") if given else family


@bp.app_template_filter("da")
def dicom_date(value) -> str:
    """DICOM DA "20260131" as "2026-01-31"."""
    v = str(value or "")
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}" if len(v) == 8 and v.isdigit() else v


from . import views  # noqa: E402,F401 - registers the routes
