"""C-STORE SCP: every object goes through the one ingest path, and the status tells the truth.

A caller registered in the peer registry without the store permission (``--no-store``)
is refused; unregistered callers the association policy let in may store.
"""
from __future__ import annotations

import logging

from pynetdicom import AllStoragePresentationContexts, evt

from ..errors import ApplianceError
from ..ingest import Ingestor, Origin
from ..records.peers import PeerRegistry
from .registry import DimseService, Handler
from .status import NOT_AUTHORIZED, PROCESSING_FAILURE, SUCCESS, status

log = logging.getLogger(__name__)
# Every storage SOP class pynetdicom knows; others (new, private) are served too (any_sop_class).
STORAGE_SOP_CLASSES = tuple(cx.abstract_syntax for cx in AllStoragePresentationContexts)


def handle_store(event, ingestor: Ingestor):
    calling = event.assoc.requestor.ae_title.strip()
    origin = Origin("dicom", f"{calling}@{event.assoc.requestor.address}")
    try:
        ingestor.store_bytes(event.encoded_dataset(), origin)
    except ApplianceError as exc:
        log.warning("C-STORE from %s refused (0x%04X): %s", calling, exc.dimse_status, exc)
        return status(exc.dimse_status, str(exc))
    except Exception:  # noqa: BLE001 - never take the node down, never claim success
        log.exception("C-STORE from %s failed", calling)
        return status(PROCESSING_FAILURE, "internal error while storing; see the appliance log")
    return SUCCESS


def store_if_permitted(event, ingestor: Ingestor, peers: PeerRegistry):
    calling = event.assoc.requestor.ae_title.strip()
    if not peers.permits(calling, "can_store"):
        return status(NOT_AUTHORIZED, f"{calling} is registered without permission to store")
    return handle_store(event, ingestor)


def service(ingestor: Ingestor, peers: PeerRegistry | None = None) -> DimseService:
    handler = (Handler(evt.EVT_C_STORE, store_if_permitted, (ingestor, peers)) if peers is not None
               else Handler(evt.EVT_C_STORE, handle_store, (ingestor,)))
    return DimseService("Storage", STORAGE_SOP_CLASSES, (handler,), any_sop_class=True, reference="PS3.4 Annex B")
