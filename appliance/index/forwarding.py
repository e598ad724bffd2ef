"""The durable forwarding queue (appliance/forward.py)."""
from __future__ import annotations

from .repository import Repository


class ForwardingRepo(Repository):
    pass
