"""The /dicomweb blueprint, its roles, error handling, audit and CORS helpers."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, g, jsonify, request

from appliance.errors import ApplianceError
from web.auth import api_login_required

log = logging.getLogger(__name__)

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

# Who may do what. Every logged-in role may search and view (as in the web UI). Storing
# (STOW-RS) can replace an existing instance under the archive's on_conflict policy, so
# it is for admins and technologists only; a reporting system or AI tool that stores
# results gets an API token of a technologist account.
READ_ROLES = ("admin", "clinician", "technologist")
STORE_ROLES = ("admin", "technologist")

read_access = api_login_required(*READ_ROLES)
store_access = api_login_required(*STORE_ROLES)

DICOM_JSON = "application/dicom+json"


def appliance():
    return current_app.extensions["appliance"]


def actor() -> str:
    user = getattr(g, "user", None)
    return getattr(user, "username", "") or "unknown"


def audit(action: str, study_uid: str = "", detail: str = "", patient_id: str = "") -> None:
    """One audit record per request (not per instance), naming the user and the caller's address."""
    appliance().audit.record(action, actor(), study_uid=study_uid, patient_id=patient_id,
                             address=request.remote_addr or "", detail=f"{request.method} {request.path} {detail}")


def base_url() -> str:
    """The DICOMweb root as the client reached it (for RetrieveURL and BulkDataURI)."""
    host = request.host
    if ":" not in host.rsplit("]", 1)[-1]:
        # dicomweb-client sends "Host: name" without the port; the port we listen on is the one it used.
        port = request.environ.get("SERVER_PORT", "")
        if port and port != {"http": "80", "https": "443"}.get(request.scheme):
            host = f"{host}:{port}"
    return f"{request.scheme}://{host}{request.script_root}{bp.url_prefix}"


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
