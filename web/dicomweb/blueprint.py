"""The /dicomweb blueprint, its roles, error handling, audit and CORS helpers."""
from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, Response, current_app, g, jsonify, request

from appliance.errors import ApplianceError
from web.auth import api_login_required, forbidden
from web.current import appliance

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

# Who may do what. Every logged-in role may search and view (as in the web UI): metadata,
# frames, rendered images, thumbnails, bulk data. Whole DICOM objects (WADO-RS instance,
# series and study retrieval; WADO-URI contentType=application/dicom) are an export, as the
# study page's ZIP and CD are: admins and clinicians only, audited as "study.export". Storing
# (STOW-RS) can replace an existing instance under the archive's on_conflict policy, so
# it is for admins and technologists only; a reporting system or AI tool that stores
# results gets an API token of a technologist account.
READ_ROLES = ("admin", "clinician", "technologist")
STORE_ROLES = ("admin", "technologist")
EXPORT_ROLES = ("admin", "clinician")

read_access = api_login_required(*READ_ROLES)
store_access = api_login_required(*STORE_ROLES)

DICOM_JSON = "application/dicom+json"


def actor() -> str:
    user = getattr(g, "user", None)
    return getattr(user, "username", "") or "unknown"


class ViewerAuditWindow:
    """Remembers (user, address, study, kind) for ``seconds``, so a viewer scrolling a cine
    (one frame request each) is one audit entry per minute, not hundreds of writes
    through the index writer that DICOM ingest also needs."""

    def __init__(self, seconds: float = 60.0, max_entries: int = 10_000):
        self.seconds = seconds
        self.max_entries = max_entries
        self._seen: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def first_in_window(self, key: tuple) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last < self.seconds:
                return False
            if len(self._seen) >= self.max_entries:
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.seconds}
            self._seen[key] = now
            return True


VIEWER_KINDS = ("frames", "rendered", "thumbnail", "bulkdata")  # a full retrieve or metadata is always recorded


def audit(action: str, study_uid: str = "", detail: str = "", patient_id: str = "") -> None:
    """One audit record per request (not per instance), naming the user and the caller's address.

    Viewer traffic (frames, rendered, thumbnails, bulk data) is recorded once a minute per
    user, address and study: the entry says who looked at which study, and when.
    """
    address = request.remote_addr or ""
    kind = detail.split(" ", 1)[0]
    if action == "dicomweb.retrieve" and kind in VIEWER_KINDS:
        window = current_app.extensions["dicomweb"].audit_window
        if not window.first_in_window((actor(), address, study_uid, kind)):
            return
        detail += f" (further {kind} requests within {window.seconds:.0f} s not listed)"
    appliance().audit.record(action, actor(), study_uid=study_uid, patient_id=patient_id, address=address,
                             detail=f"{request.method} {request.path} {detail}")


def require_export() -> Response | None:
    """None when the user may take whole objects away; else the (audited) 403 to answer."""
    user = getattr(g, "user", None)
    if user is not None and user.role in EXPORT_ROLES:
        return None
    return forbidden("whole DICOM objects are an export, for admins and clinicians; viewing (metadata, frames, "
                     "rendered images) is open to your role")


def public_root() -> str:
    """The box's address as clients know it: ``[http] public_url`` behind a reverse proxy, else the request's."""
    configured = appliance().config.http.public_url
    if configured:
        return configured.rstrip("/")
    host = request.host
    if ":" not in host.rsplit("]", 1)[-1]:
        # dicomweb-client sends "Host: name" without the port; the port we listen on is the one it used.
        port = request.environ.get("SERVER_PORT", "")
        if port and port != {"http": "80", "https": "443"}.get(request.scheme):
            host = f"{host}:{port}"
    return f"{request.scheme}://{host}{request.script_root}"


def base_url() -> str:
    """The DICOMweb root as the client reached it (for RetrieveURL and BulkDataURI)."""
    return f"{public_root()}{bp.url_prefix}"


@bp.errorhandler(ApplianceError)
def _appliance_error(exc: ApplianceError):
    status = getattr(exc, "http_status", 500) or 500
    if status >= 500:
        log.error("DICOMweb %s %s failed: %s", request.method, request.path, exc)
    return Response(f"{exc}\n", status, mimetype="text/plain")


@bp.after_request
def _cors(response: Response) -> Response:
    """CORS for browser viewers on another origin: only when [dicomweb] cors_origins says so."""
    allowed = current_app.extensions["dicomweb"].cors_origins
    origin = request.headers.get("Origin")
    if allowed and origin and ("*" in allowed or origin in allowed):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = "Content-Type, Content-Length, Warning, Location"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Accept, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
    return response


@bp.route("/", defaults={"path": ""}, methods=["OPTIONS"])
@bp.route("/<path:path>", methods=["OPTIONS"])
def _preflight(path: str):
    # A CORS preflight carries no credentials; answered without data (headers added above when allowed).
    return Response(status=204)


def json_response(payload, status: int = 200, warnings: list[str] | None = None) -> Response:
    response = jsonify(payload)
    response.status_code = status
    response.mimetype = DICOM_JSON
    for w in warnings or ():
        response.headers.add("Warning", f'299 pacs-appliance "{w}"')
    return response
