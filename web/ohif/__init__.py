"""/ohif: OHIF's release build served on the box's own origin, signed in by the box's session.

The dist is installed by ``pacs-appliance ohif install`` (appliance/ohif.py, which also moves its
public path to /ohif/). Its app-config.js is generated here on each request: the data source is
this box's /dicomweb with the capabilities it has, so no credentials or addresses sit in a file.
Every path needs a signed-in user of a role that may use the built-in viewer; /dicomweb then
applies the same per-role rules to what OHIF asks for as to any other client.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

from flask import Blueprint, Response, g, redirect, render_template, send_from_directory
from werkzeug.security import safe_join

from appliance.ohif import PREFIX, PINNED_VERSION, installed_version

from ..auth import VIEW_ROLES, login_required
from ..current import appliance

bp = Blueprint("ohif", __name__, url_prefix="/ohif")

HASHED = re.compile(r"\.[0-9a-f]{16}\.(js|wasm)$|^[0-9a-f]{16}\.(wasm|woff2)$")  # content-hashed names


def dist_dir() -> Path:
    return appliance().config.ohif_dir


def is_installed() -> bool:
    return installed_version(dist_dir()) is not None


def app_config(public_root: str) -> dict:
    """OHIF's window.config: one DICOMweb data source, this box, and what its /dicomweb supports."""
    root = f"{public_root}/dicomweb"
    return {
        "routerBasename": PREFIX.rstrip("/"),
        "showStudyList": True,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "pacs",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "pacs",
            "configuration": {
                "friendlyName": "PACS Appliance",
                "name": "pacs",
                "qidoRoot": root,
                "wadoRoot": root,
                "wadoUriRoot": f"{root}/wado",
                "qidoSupportsIncludeField": True,
                "supportsFuzzyMatching": True,
                "supportsWildcard": True,
                "supportsReject": False,  # the box keeps what it archived; no Reject Note handling
                "dicomUploadEnabled": False,  # as in the built-in viewer; STOW-RS stays for tools with a token
                "imageRendering": "wadors",
                "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True,
                "staticWado": False,
                "bulkDataURI": {"enabled": True},
                "omitQuotationForMultipartRequest": True,
            },
        }],
    }


def _csp(index_html: str | None = None) -> str:
    """The box's CSP, widened for OHIF only: its inline boot scripts (by hash), WebAssembly decoders,
    web workers from blob: URLs, inline styles of its UI library. connect-src stays 'self'."""
    hashes = ""
    if index_html:
        for body in re.findall(r"<script>(.*?)</script>", index_html, flags=re.S):
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            hashes += f" 'sha256-{digest}'"
    return ("default-src 'self'; "
            f"script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval'{hashes}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
            "worker-src 'self' blob:; connect-src 'self' data: blob:; object-src 'none'; base-uri 'self'; "
            "frame-ancestors 'self'; form-action 'self'")


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _csp(g.get("ohif_index_html"))
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


def _not_installed() -> tuple[str, int]:
    return render_template(
        "error.html", title="OHIF is not installed",
        message=(f"The OHIF viewer is not installed on this box. An administrator installs it from the npm "
                 f"package's tarball (fetched on any computer with `npm pack @ohif/app@{PINNED_VERSION}`): "
                 f"`pacs-appliance ohif install ohif-app-{PINNED_VERSION}.tgz`. It is then served here, at "
                 f"/ohif, signed in as you. The built-in viewer works without it.")), 404


@bp.get("")
@login_required(*VIEW_ROLES)
def root():
    return redirect(PREFIX)


@bp.get("/app-config.js")
@login_required(*VIEW_ROLES)
def config_js():
    from ..dicomweb.blueprint import public_root

    body = "window.config = " + json.dumps(app_config(public_root()), indent=1) + ";\n"
    return Response(body, 200, content_type="text/javascript; charset=utf-8")


@bp.get("/", defaults={"path": ""})
@bp.get("/<path:path>")
@login_required(*VIEW_ROLES)
def files(path: str):
    if not is_installed():
        return _not_installed()
    base = dist_dir()
    target = safe_join(str(base), path) if path else None
    if target is not None and Path(target).is_file():
        response = send_from_directory(base, path, max_age=0)
        # Content-hashed bundles never change under their name; the rest is checked on each load.
        response.headers["Cache-Control"] = ("private, max-age=604800, immutable" if HASHED.search(Path(path).name)
                                             else "private, no-cache")
        return response
    if "." in Path(path).name:
        return Response("not found\n", 404, mimetype="text/plain")  # a missing asset, not a route of the app
    # A route of the single-page app (/ohif/viewer?StudyInstanceUIDs=..., the study list): its index.html.
    html = (base / "index.html").read_text(encoding="utf-8")
    response = Response(html, 200, content_type="text/html; charset=utf-8")
    g.ohif_index_html = html  # its inline scripts are allowed by hash (_headers)
    response.headers["Cache-Control"] = "no-store"
    return response
