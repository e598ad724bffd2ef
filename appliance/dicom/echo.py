"""C-ECHO: the verification service modalities use to test the connection (PS3.4 Annex A)."""
from __future__ import annotations

from pynetdicom import evt
from pynetdicom.sop_class import Verification

from .registry import DimseService, Handler
from .status import SUCCESS


def handle_echo(event) -> int:
    return SUCCESS


def service() -> DimseService:
    return DimseService("Verification", (Verification,), (Handler(evt.EVT_C_ECHO, handle_echo),),
                        reference="PS3.4 Annex A")
