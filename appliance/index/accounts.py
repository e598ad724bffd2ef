"""Users, web sessions and API tokens."""
from __future__ import annotations

from .repository import Repository


class AccountsRepo(Repository):
    pass
