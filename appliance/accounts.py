"""User accounts: roles and password hashing (scrypt via Werkzeug's helpers).

Roles:
- ``admin``: everything, including users, peers and settings;
- ``clinician``: view and export patient data;
- ``technologist``: view images and manage the worklist, no export or admin.
"""
from __future__ import annotations

import re

from werkzeug.security import check_password_hash, generate_password_hash

from .errors import ApplianceError
from .index.models import User

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
