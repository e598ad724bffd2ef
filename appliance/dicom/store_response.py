"""C-STORE responses sent as whole PDUs: now part of outbound.py (``Outbound.send_msg``, ``store_response``).

Kept for ``SentStoreResponse``, the message the association log's C-STORE tally receives for
them (association_log.py imports it from here).
"""
from __future__ import annotations

from .outbound import SentStoreResponse, store_response

__all__ = ["SentStoreResponse", "store_response"]
