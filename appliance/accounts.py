"""User accounts: roles and password hashing (scrypt via Werkzeug's helpers).

Roles:
- ``admin``: everything, including users, peers and settings;
- ``clinician``: view and export patient data;
- ``technologist``: view images and manage the worklist, no export or admin.
"""
from __future__ import annotations

import datetime
import hashlib
import re
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

from .errors import ApplianceError
from .index.models import User, utcnow

ROLES = ("admin", "clinician", "technologist")
USERNAME = re.compile(r"^[A-Za-z0-9._-]{2,64}$")
MIN_PASSWORD = 10


class AccountError(ApplianceError):
    http_status = 400


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def verify_password(password_hash: str, password: str) -> bool:
    return check_password_hash(password_hash, password)


def validate(username: str, password: str | None, role: str | None) -> None:
    if not USERNAME.match(username or ""):
        raise AccountError("user names are 2-64 letters, digits, dots, dashes or underscores")
    if password is not None and len(password) < MIN_PASSWORD:
        raise AccountError(f"passwords need at least {MIN_PASSWORD} characters")
    if role is not None and role not in ROLES:
        raise AccountError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")


def create_user(username: str, password: str, role: str) -> User:
    """Create a user; call through the index writer."""
    validate(username, password, role)
    if User.get_or_none(User.username == username) is not None:
        raise AccountError(f"a user named {username} already exists")
    return User.create(username=username, password_hash=hash_password(password), role=role)


# --- changing accounts (each call runs inside the index writer) -------------------------------

def get_user(username: str) -> User:
    user = User.get_or_none(User.username == username)
    if user is None:
        raise AccountError(f"no user named {username!r} (see `pacs-appliance user list`)")
    return user


def set_password(username: str, password: str) -> User:
    validate(username, password, None)
    user = get_user(username)
    user.password_hash = hash_password(password)
    user.save()
    _end_sessions(user)
    return user


def set_role(username: str, role: str) -> User:
    validate(username, None, role)
    user = get_user(username)
    if user.role == "admin" and role != "admin":
        _keep_one_admin(user)
    user.role = role
    user.save()
    return user


def set_disabled(username: str, disabled: bool = True) -> User:
    user = get_user(username)
    if disabled and user.role == "admin":
        _keep_one_admin(user)
    user.disabled = disabled
    user.save()
    if disabled:
        _end_sessions(user)
    return user


def list_users() -> list[User]:
    return list(User.select().order_by(User.username))


def _keep_one_admin(user: User) -> None:
    others = User.select().where((User.role == "admin") & (User.disabled == False) & (User.id != user.id))  # noqa: E712
    if not others.exists():
        raise AccountError(f"{user.username} is the last active admin; make another admin first")


def _end_sessions(user: User) -> None:
    from .index.models.web import ApiToken, WebSession

    WebSession.delete().where(WebSession.user == user).execute()
    ApiToken.update(revoked=True).where(ApiToken.user == user).execute()


# --- logging in (read-only: callers record the outcome) ---------------------------------------

# A real scrypt check against this hash when the user does not exist, so a failed login
# takes as long for an unknown name as for a wrong password.
_DUMMY_HASH = hash_password("not-a-real-password")


def authenticate(username: str, password: str) -> User | None:
    """The active user with this name and password, or None."""
    user = User.get_or_none(User.username == (username or ""))
    if user is None:
        verify_password(_DUMMY_HASH, password or "")
        return None
    if not verify_password(user.password_hash, password or "") or user.disabled:
        return None
    return user


# --- API tokens: only a SHA-256 of the token is stored ---------------------------------------

TOKEN_PREFIX = "pacs_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(username: str, name: str = "") -> tuple[str, "ApiToken"]:
    """A new token for ``username``: returns (the token, shown once; its row)."""
    from .index.models.web import ApiToken

    user = get_user(username)
    if user.disabled:
        raise AccountError(f"{username} is disabled")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.create(user=user, name=name[:100], token_hash=token_hash(token), prefix=token[:12])
    return token, row


def revoke_api_token(token_id: int) -> None:
    from .index.models.web import ApiToken

    ApiToken.update(revoked=True).where(ApiToken.id == token_id).execute()


TOKEN_TOUCH_EVERY = datetime.timedelta(seconds=60)  # write last_used_at at most this often per token


def token_for(token: str) -> "ApiToken | None":
    """The unrevoked token row (with its user joined) for this token, if its user is active; else None."""
    from .index.models.web import ApiToken

    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    row = (ApiToken.select(ApiToken, User).join(User)
           .where((ApiToken.token_hash == token_hash(token)) & (ApiToken.revoked == False))  # noqa: E712
           .first())
    if row is None or row.user.disabled:
        return None
    return row


def user_for_token(token: str) -> User | None:
    """The active user owning this (unrevoked) token, or None."""
    row = token_for(token)
    return row.user if row is not None else None


def note_token_use(row, submit) -> None:
    """Record that the token ``row`` was just used: at most once a minute, through the index
    writer's ``submit`` without waiting (an admin reads ``last_used_at`` in days, not seconds)."""
    now = utcnow()
    if row.last_used_at is not None and now - row.last_used_at < TOKEN_TOUCH_EVERY:
        return
    from .index.models.web import ApiToken

    submit(lambda: ApiToken.update(last_used_at=now).where(ApiToken.id == row.id).execute())
