"""Authentication and authorisation for pages and APIs.

CONTRACT (other blueprints rely on these names; the web-foundation work fills them in):
- ``login_required(*roles)``: decorator for pages; redirects to the login page when
  nobody is logged in, 403 when the role is not allowed.
- ``api_login_required(*roles)``: decorator for APIs (DICOMweb, JSON): accepts a
  session cookie, HTTP Basic over the same accounts, or ``Authorization: Bearer
  <api token>``; answers 401 with WWW-Authenticate otherwise, 403 for a wrong role.
- ``current_user()``: the logged-in ``User`` row (``.username``, ``.role``) or None.
Roles: "admin", "clinician", "technologist" (appliance.accounts.ROLES). No roles
given means any logged-in user.
"""
from __future__ import annotations

import functools

from flask import Response, current_app, g, request

from appliance.accounts import verify_password
from appliance.index.models import User

VIEW_ROLES = ("admin", "clinician", "technologist")


def current_user():
    return getattr(g, "user", None)


def _basic_user():
    auth = request.authorization
    if not auth or auth.type != "basic" or not auth.username:
        return None
    user = User.get_or_none(User.username == auth.username)
    if user is None or user.disabled or not verify_password(user.password_hash, auth.password or ""):
        return None
    return user


def api_login_required(*roles):
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = current_user() or _basic_user()
            if user is None:
                return Response("authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="PACS"'})
            if roles and user.role not in roles:
                return Response("your role does not allow this\n", 403)
            g.user = user
            return view(*args, **kwargs)

        return wrapped

    return decorator


login_required = api_login_required  # replaced by the session-based version in the web foundation
