"""The web app: Flask app factory; the appliance's services are passed in, never imported as globals.

Blueprints: auth (login/logout, the auth contract), admin (dashboard, peers, users,
worklist, audit, settings), health (/healthz, /metrics); DICOMweb registers itself
below. Every response gets the security headers; pages are ``no-store`` because
most show patient data.
"""
from __future__ import annotations

import datetime
import io
import logging
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Request, request
from flask.sessions import SecureCookieSessionInterface

from . import auth
from .health.metrics import Metrics
from .recent_errors import RecentErrors
from .sessions import LoginThrottle, SessionStore

SECRET_NAME = "web_session_secret"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


@dataclass
class WebServices:
    sessions: SessionStore
    throttle: LoginThrottle
    basic_cache: auth.BasicCache
    recent_errors: RecentErrors
    metrics: Metrics


class MemoryRequest(Request):
    """Form file parts stay in memory (bounded by ``auth.limit_body``): Werkzeug's default spools
    any over 500 KB to a temporary file, in plaintext, which invariant 4 forbids. The one exception
    is a view marked ``auth.bulk_upload`` (a software update bundle, no patient data, hundreds of
    MiB): ``limit_body`` names its ``spool_dir``, and the file part goes to an unnamed file there."""

    spool_dir: Path | None = None

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if self.spool_dir is not None:
            return tempfile.TemporaryFile(dir=self.spool_dir)
        return io.BytesIO()


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure when configured or when the request came over HTTPS."""

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


def session_secret(keys) -> str:
    """The cookie-signing secret, kept in the keyring's ``extra`` (created on first use)."""
    keyring = keys.load()
    secret = keyring.extra.get(SECRET_NAME)
    if not secret:
        secret = keyring.extra[SECRET_NAME] = secrets.token_urlsafe(48)
        try:
            keys.save(keyring)
        except OSError as exc:  # e.g. a read-only keys directory: still secure, only not kept across restarts
            logging.getLogger(__name__).warning(
                "cannot store the web session secret in %s (%s): sessions end when the appliance restarts",
                keys.dir, exc)
    return secret


def recent_errors_of(appliance) -> RecentErrors:
    """One in-memory log handler per appliance (tests build several apps on one appliance)."""
    handler = getattr(appliance, "recent_errors", None)
    if handler is None:
        handler = RecentErrors()
        logging.getLogger().addHandler(handler)
        try:
            appliance.recent_errors = handler
        except AttributeError:  # a frozen or slotted stand-in: keep the handler anyway
            pass
    return handler


def create_app(appliance, test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.extensions["appliance"] = appliance
    http = appliance.config.http
    app.config.update(
        SECRET_KEY=session_secret(appliance.keys),
        SESSION_COOKIE_NAME="pacs_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=bool(http.secure_cookies),
        PERMANENT_SESSION_LIFETIME=datetime.timedelta(hours=http.session_max_hours),
        MAX_FORM_MEMORY_SIZE=1 << 20,
        MAX_CONTENT_LENGTH=http.max_upload_mb << 20,  # per request, auth.limit_body sets the real bound
        TEMPLATES_AUTO_RELOAD=False,
    )
    if test_config:
        app.config.update(test_config)
    app.request_class = MemoryRequest
    app.session_interface = SessionInterface()
    app.extensions["pacs_web"] = WebServices(
        sessions=SessionStore(appliance.index.accounts, http.session_idle_minutes, http.session_max_hours),
        throttle=LoginThrottle(http.login_max_failures, http.lockout_minutes),
        basic_cache=auth.BasicCache(),
        recent_errors=recent_errors_of(appliance),
        metrics=Metrics(appliance.events),
    )

    app.before_request(auth.load_user)
    app.before_request(auth.limit_body)  # before anything reads the body
    app.before_request(auth.check_csrf)
    app.after_request(security_headers)
    app.jinja_env.globals.update(csrf_token=auth.csrf_token, current_user=auth.current_user)
    app.jinja_env.filters["local"] = local_time

    from .admin import bp as admin_bp
    from .corrections import bp as fix_bp
    from .dicomweb import init_app as init_dicomweb
    from .health import bp as health_bp
    from .ohif import bp as ohif_bp
    from .viewer import bp as viewer_bp

    app.register_blueprint(auth.bp)
    app.register_blueprint(admin_bp)
    app.register_blueprint(health_bp)
    app.register_blueprint(viewer_bp)  # study list, study pages, image viewer, media export
    app.register_blueprint(fix_bp)  # a study's Fix page: correct, move, merge, split, delete, anonymized copy
    app.register_blueprint(ohif_bp)  # /ohif: OHIF's release build when installed (web/ohif)
    init_dicomweb(app, appliance)  # /dicomweb: QIDO-RS, WADO-RS, STOW-RS, WADO-URI
    return app


def local_time(value, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A naive UTC datetime from the index, shown in the box's local time zone."""
    if not value:
        return ""
    return value.replace(tzinfo=datetime.timezone.utc).astimezone().strftime(fmt)


def security_headers(response):
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("Referrer-Policy", "same-origin")
    if request.is_secure:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")
    if request.endpoint != "static":
        h.setdefault("Cache-Control", "no-store")
    return response
