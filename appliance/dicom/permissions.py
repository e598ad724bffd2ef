"""Enforcing the registry's per-peer permissions on C-STORE and C-FIND.

The association policy decides who may connect at all; a registered peer can
additionally be barred from storing (``--no-store``) or querying
(``--no-query``). Callers that are not registered (allowed by
``[dicom] allowed_callers`` or an empty allow-list) keep every permission.
Retrieval is checked in move.py/get.py.
"""
from __future__ import annotations

from ..ingest import Ingestor
from ..peers import PeerRegistry
from .status import status
from .store import handle_store

NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x "Refused: Not Authorized"


def store_if_permitted(event, ingestor: Ingestor, peers: PeerRegistry):
    calling = event.assoc.requestor.ae_title.strip()
    if not peers.permits(calling, "can_store"):
        return status(NOT_AUTHORIZED, f"{calling} is registered without permission to store")
    return handle_store(event, ingestor)


def query_refusal(peers: PeerRegistry, calling: str):
    """A status to end a C-FIND with when ``calling`` may not query, else None."""
    if peers.permits(calling, "can_query"):
        return None
    return status(NOT_AUTHORIZED, f"{calling} is registered without permission to query")
