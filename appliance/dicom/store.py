"""C-STORE SCP: every object goes through the one ingest path, and the status tells the truth."""
from __future__ import annotations

import logging

from ..errors import SUCCESS, ApplianceError, PROCESSING_FAILURE
from ..ingest import Ingestor, Origin
from .status import status

log = logging.getLogger(__name__)


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
