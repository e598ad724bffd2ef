"""Enforcing the registry's per-peer query permission on C-FIND (query/retrieve and worklist).

The association policy decides who may connect at all; a registered peer can
additionally be barred from storing (``--no-store``, checked in store.py) or
querying (``--no-query``, here). Callers that are not registered (allowed by
``[dicom] allowed_callers`` or an empty allow-list) keep every permission.
Retrieval is checked in move.py/get.py.
"""
from __future__ import annotations

from ..records.peers import PeerRegistry
from .status import NOT_AUTHORIZED, status


def query_refusal(peers: PeerRegistry | None, calling: str):
    """A status to end a C-FIND with when ``calling`` may not query, else None (also without a registry)."""
    if peers is None or peers.permits(calling, "can_query"):
        return None
    return status(NOT_AUTHORIZED, f"{calling} is registered without permission to query")
