"""Authentication and authorisation for pages and APIs.

CONTRACT (other blueprints rely on these names):
- ``login_required(*roles)``: decorator for pages; redirects to the login page when
  nobody is logged in, 403 when the role is not allowed.
- ``api_login_required(*roles)``: decorator for APIs (DICOMweb, JSON): accepts a
  session cookie, HTTP Basic over the same accounts, or ``Authorization: Bearer
  <api token>``; answers 401 with WWW-Authenticate otherwise, 403 for a wrong role.
  When an Authorization header is sent it alone decides (no fallback to the cookie).
- ``current_user()``: the logged-in ``User`` row (``.username``, ``.role``) or None.
Roles: "admin", "clinician", "technologist" (appliance.records.accounts.ROLES). No roles
given means any logged-in user.

CSRF: every POST/PUT/PATCH/DELETE must carry the session's token as the form field
``csrf_token`` or the header ``X-CSRF-Token`` (templates: ``{{ csrf_token() }}``),
except requests authenticated by an ``Authorization: Basic/Bearer`` header, which a
cross-site page cannot add, and anonymous requests other than the login form (they
carry no session to abuse and are refused by the view's decorator).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from flask import (Blueprint, Response, abort, current_app, g, redirect, render_template, request, session,
                   url_for)

from appliance.records import accounts

from .current import appliance

VIEW_ROLES = ("admin", "clinician", "technologist")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
bp = Blueprint("auth", __name__)


def current_user():
    return getattr(g, "user", None)


def _services():
    return current_app.extensions["pacs_web"]


def client_address() -> str:
    return request.remote_addr or ""


def audit(action: str, actor: str | None = None, **fields) -> None:
    """Record an audit entry for the current request (actor defaults to the logged-in user)."""
    user = current_user()
    actor = actor or (user.username if user is not None else "anonymous")
    appliance().audit.record(action, actor, address=client_address(), **fields)


# --- the session cookie ------------------------------------------------------------------------

def load_user() -> None:
    """before_request: resolve the session cookie into ``g.user``."""
    g.user = None
    sid = session.get("sid")
    if sid:
        g.user = _services().sessions.lookup(sid)
        if g.user is None:
            session.pop("sid", None)


ANONYMOUS_BODY_LIMIT = 8 << 10  # the login form is a few hundred bytes
FORM_BODY_LIMIT = 1 << 20  # no form of the web UI uploads files
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class BulkUpload:
    role: str  # only this role's body may be this big (anyone else's form keeps FORM_BODY_LIMIT)
    limit: int  # bytes
    spool_dir: Callable[[], Path]  # a private folder on the disk that keeps the file


def bulk_upload(role: str, limit: int, spool_dir: Callable[[], Path]):
    """Mark a form view that takes one big file that is not patient data (a software update bundle):
    ``role``'s request body may be ``limit`` bytes, and its file part is spooled into ``spool_dir()``
    rather than held in memory. Put it between the route and ``login_required``."""
    def mark(view):
        view.bulk_upload = BulkUpload(role, limit, spool_dir)
        return view
    return mark


def limit_body() -> None:
    """before_request, before anything reads the body: authenticate, then bound what may be read.

    An anonymous request may carry a body of ``ANONYMOUS_BODY_LIMIT`` (the login form); a bigger
    one gets 413 at once, unread (the server closes the connection instead of draining it). A
    logged-in user's form is bounded by ``FORM_BODY_LIMIT``, anything else (STOW-RS) by
    ``[http] max_upload_mb``. Werkzeug enforces the limit on a chunked body while it is read.
    """
    length = request.content_length
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if not length and not chunked:
        return
    user = current_user()
    if _authorization_scheme() in ("basic", "bearer"):
        user = _api_user()
    bulk = getattr(current_app.view_functions.get(request.endpoint), "bulk_upload", None)
    if user is None:
        limit = ANONYMOUS_BODY_LIMIT
    elif bulk is not None and user.role == bulk.role:
        limit = bulk.limit
        request.spool_dir = bulk.spool_dir()  # where its file part goes, instead of memory
    elif request.mimetype in FORM_TYPES:
        limit = FORM_BODY_LIMIT
    else:
        limit = appliance().config.http.max_upload_mb << 20
    request.max_content_length = limit
    if (length or 0) > limit or (user is None and chunked):
        who = "a logged-in user's form" if user is not None and limit == FORM_BODY_LIMIT else \
            "an upload" if user is not None else "a request without valid credentials"
        abort(Response(f"request body too large: {who} may send at most {limit >> 10} KiB"
                       f"{' ([http] max_upload_mb)' if user is not None and limit != FORM_BODY_LIMIT else ''}\n",
                       413, {"Content-Type": "text/plain; charset=utf-8", "Connection": "close"}))


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def _authorization_scheme() -> str:
    header = request.headers.get("Authorization", "")
    return header.split(" ", 1)[0].lower() if header else ""


def check_csrf() -> None:
    """before_request: refuse a state-changing request without the session's CSRF token."""
    if request.method not in UNSAFE_METHODS:
        return
    if _authorization_scheme() in ("basic", "bearer"):
        g.csrf_skipped = True  # only API views honour this; page views refuse it (login_required)
        return
    if current_user() is None and request.endpoint != "auth.login":
        return  # nobody is logged in: the view answers 302/401 itself; the login form is still checked
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = request.form.get("csrf_token")
    expected = session.get("csrf")
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, i.e. a 500).
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(Response("The form was stale or came from another site (CSRF token missing or wrong): "
                       "reload the page and try again.\n", 400, {"Content-Type": "text/plain; charset=utf-8"}))


def start_session(user) -> None:
    """Log ``user`` in: a fresh session id and CSRF token (the old ones stop working)."""
    old = session.get("sid")
    if old:
        _services().sessions.end(old)
    session.clear()
    session["sid"] = _services().sessions.create(user, client_address())
    session["csrf"] = secrets.token_urlsafe(32)
    session.permanent = False
    g.user = user


def end_session() -> None:
    sid = session.get("sid")
    if sid:
        _services().sessions.end(sid)
    session.clear()
    g.user = None


# --- API credentials ---------------------------------------------------------------------------

class BasicCache:
    """Remembers recent successful Basic checks for a minute, so a viewer fetching hundreds of
    frames does not pay an scrypt hash each; keyed by a salted hash, never the password."""

    def __init__(self, ttl: float = 60.0, size: int = 256):
        self.ttl, self.size = ttl, size
        self._salt = secrets.token_bytes(16)
        self._entries: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def key(self, username: str, password: str) -> str:
        return hashlib.sha256(self._salt + username.encode() + b"\0" + password.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        with self._lock:
            hit = self._entries.get(key)
            return hit[1] if hit and hit[0] > time.monotonic() else None

    def put(self, key: str, password_hash: str) -> None:
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl, password_hash)


def _basic_user():
    auth = request.authorization
    if not auth or not auth.username:
        return None
    username, password = auth.username, auth.password or ""
    services = _services()
    cache_key = services.basic_cache.key(username, password)
    cached_hash = services.basic_cache.get(cache_key)
    if cached_hash is not None:
        user = appliance().index.accounts.user(username)
        if user is not None and not user.disabled and user.password_hash == cached_hash:
            return user
    if services.throttle.locked_for(username, client_address()):
        return None
    user = accounts.authenticate(appliance().index.accounts, username, password)
    if user is None:
        services.throttle.failed(username, client_address())
        audit("login.failed", actor=username[:64], detail="HTTP Basic")
        return None
    services.throttle.succeeded(username, client_address())
    services.basic_cache.put(cache_key, user.password_hash)
    return user


def _token_user():
    token = request.headers.get("Authorization", "").split(" ", 1)[-1].strip()
    repo = appliance().index.accounts
    found = accounts.token_for(repo, token)
    if found is None:
        return None
    row, user = found
    accounts.note_token_use(repo, row)  # so an admin can see stale tokens
    return user


def _api_user():
    """The user an API request authenticates as (once per request: the body limit asks first)."""
    if "api_user" not in g:
        scheme = _authorization_scheme()
        if scheme == "basic":
            g.api_user = _basic_user()
        elif scheme == "bearer":
            g.api_user = _token_user()
        else:
            g.api_user = None if scheme else current_user()
    return g.api_user


def _unauthorized() -> Response:
    return Response("authentication required: log in, or send HTTP Basic credentials or "
                    "'Authorization: Bearer <api token>'\n", 401,
                    {"WWW-Authenticate": 'Basic realm="PACS Appliance", charset="UTF-8"',
                     "Content-Type": "text/plain; charset=utf-8"})


def audit_refusal() -> None:
    """A refused attempt (403) leaves a trace: who tried what, from where."""
    audit("access.denied", detail=f"{request.method} {request.path[:200]}")


def forbidden(message: str = "your role does not allow this") -> Response:
    """403 for an API request whose user's role does not allow it, audited."""
    audit_refusal()
    return Response(f"{message}\n", 403, {"Content-Type": "text/plain; charset=utf-8"})


def api_login_required(*roles):
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = _api_user()
            if user is None:
                return _unauthorized()
            g.user = user
            if roles and user.role not in roles:
                return forbidden()
            return view(*args, **kwargs)

        return wrapped

    return decorator


def login_required(*roles):
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = current_user()
            if user is None:
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if g.get("csrf_skipped"):  # a page is driven by its session, never by an Authorization header
                return Response("pages take no Authorization header; use the form\n", 400,
                                {"Content-Type": "text/plain; charset=utf-8"})
            if roles and user.role not in roles:
                audit_refusal()
                return render_template("error.html", title="Not allowed",
                                       message="Your role does not allow this page."), 403
            return view(*args, **kwargs)

        return wrapped

    return decorator


# --- the login and logout pages ----------------------------------------------------------------

def _home() -> str:
    """Admins start on the dashboard; clinic staff on the study list (when the viewer is built)."""
    user = current_user()
    if user is not None and user.role != "admin" and "viewer.studies" in current_app.view_functions:
        return url_for("viewer.studies")
    return url_for("admin.home")


def _safe_next(target: str | None) -> str:
    """Only same-site paths, so the login form cannot bounce a user to another site."""
    if not target:
        return _home()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return _home()  # CR/LF would split the Location header (Werkzeug refuses it: a 500)
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return _home()
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if current_user() is not None:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html", next=request.args.get("next", ""))
    services = _services()
    username = (request.form.get("username") or "").strip()[:64]
    password = request.form.get("password") or ""
    address = client_address()
    wait = services.throttle.locked_for(username, address)
    if wait:
        audit("login.locked", actor=username or "anonymous")
        minutes, seconds = max(1, round(wait / 60)), max(1, round(wait))
        later = f"{seconds} second{'s' if seconds != 1 else ''}" if wait < 60 else \
            f"{minutes} minute{'s' if minutes != 1 else ''}"
        return render_template("login.html", next=request.form.get("next", ""), username=username,
                               error=f"Too many failed logins. Try again in {later}."), 429
    user = accounts.authenticate(appliance().index.accounts, username, password)
    if user is None:
        services.throttle.failed(username, address)
        audit("login.failed", actor=username or "anonymous")
        return render_template("login.html", next=request.form.get("next", ""), username=username,
                               error="Wrong user name or password."), 401
    services.throttle.succeeded(username, address)
    start_session(user)
    audit("login.ok", actor=user.username)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    user = current_user()
    end_session()
    if user is not None:
        audit("logout", actor=user.username)
    return redirect(url_for("auth.login"))
