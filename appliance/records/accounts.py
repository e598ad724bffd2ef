"""User accounts: roles and password hashing (scrypt via Werkzeug's helpers).

Roles:
- ``admin``: everything, including users, peers and settings;
- ``clinician``: view and export patient data;
- ``technologist``: view images and manage the worklist, no export or admin.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
import re
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

from ..errors import ApplianceError
from ..index import utcnow
from ..index.accounts import AccountsRepo, ApiToken, User

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


def create_user(repo: AccountsRepo, username: str, password: str, role: str) -> User:
    """Create a user; call through the index writer."""
    validate(username, password, role)
    if repo.user(username) is not None:
        raise AccountError(f"a user named {username} already exists")
    return repo.add_user(username, hash_password(password), role)


# --- changing accounts (each call runs inside the index writer) -------------------------------

def get_user(repo: AccountsRepo, username: str) -> User:
    user = repo.user(username)
    if user is None:
        raise AccountError(f"no user named {username!r} (see `pacs-appliance user list`)")
    return user


def set_password(repo: AccountsRepo, username: str, password: str) -> User:
    validate(username, password, None)
    user = repo.change_user(get_user(repo, username).id, password_hash=hash_password(password))
    repo.end_sessions(user.id)
    return user


def set_role(repo: AccountsRepo, username: str, role: str) -> User:
    validate(username, None, role)
    user = get_user(repo, username)
    if user.role == "admin" and role != "admin":
        _keep_one_admin(repo, user)
    return repo.change_user(user.id, role=role)


def set_disabled(repo: AccountsRepo, username: str, disabled: bool = True) -> User:
    user = get_user(repo, username)
    if disabled and user.role == "admin":
        _keep_one_admin(repo, user)
    user = repo.change_user(user.id, disabled=disabled)
    if disabled:
        repo.end_sessions(user.id)
    return user


def list_users(repo: AccountsRepo) -> list[User]:
    return repo.users()


def _keep_one_admin(repo: AccountsRepo, user: User) -> None:
    if not repo.other_active_admin_exists(user.id):
        raise AccountError(f"{user.username} is the last active admin; make another admin first")


# --- logging in (read-only: callers record the outcome) ---------------------------------------

@functools.cache
def _dummy_hash() -> str:
    """A real scrypt check against this hash when the user does not exist, so a failed login takes as long
    for an unknown name as for a wrong password. Made at the first failed login, not at import: one scrypt
    is ~0.4 s of CPU that every process start (and `serve`'s start to its first C-ECHO) paid before."""
    return hash_password("not-a-real-password")


def authenticate(repo: AccountsRepo, username: str, password: str) -> User | None:
    """The active user with this name and password, or None."""
    user = repo.user(username or "")
    if user is None:
        verify_password(_dummy_hash(), password or "")
        return None
    if not verify_password(user.password_hash, password or "") or user.disabled:
        return None
    return user


# --- API tokens: only a SHA-256 of the token is stored ---------------------------------------

TOKEN_PREFIX = "pacs_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(repo: AccountsRepo, username: str, name: str = "") -> tuple[str, ApiToken]:
    """A new token for ``username``: returns (the token, shown once; its row). Inside the index writer."""
    user = get_user(repo, username)
    if user.disabled:
        raise AccountError(f"{username} is disabled")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, repo.add_token(user.id, name[:100], token_hash(token), token[:12])


def revoke_api_token(repo: AccountsRepo, token_id: int) -> None:
    """Inside the index writer."""
    repo.revoke_token(token_id)


TOKEN_TOUCH_EVERY = datetime.timedelta(seconds=60)  # write last_used_at at most this often per token


def token_for(repo: AccountsRepo, token: str) -> tuple[ApiToken, User] | None:
    """The unrevoked token and its user for this token, if the user is active; else None."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    found = repo.token_by_hash(token_hash(token))
    if found is None or found[1].disabled:
        return None
    return found


def user_for_token(repo: AccountsRepo, token: str) -> User | None:
    """The active user owning this (unrevoked) token, or None."""
    found = token_for(repo, token)
    return found[1] if found is not None else None


def note_token_use(repo: AccountsRepo, row: ApiToken) -> None:
    """Record that the token ``row`` was just used: at most once a minute, through the index
    writer without waiting (an admin reads ``last_used_at`` in days, not seconds)."""
    now = utcnow()
    if row.last_used_at is not None and now - row.last_used_at < TOKEN_TOUCH_EVERY:
        return
    repo.touch_token(row.id, now)
