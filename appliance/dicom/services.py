"""Every DIMSE service of the node, built with its collaborators: the one list app.py registers
and the Conformance Statement (conformance.py) is generated from."""
from __future__ import annotations

from . import commitment as commitment_mod
from . import echo, find, get, move, mpps, store, worklist
from .registry import DimseService
from .scu import ObjectSender


def all_services(*, ingestor, index, peers, worklist_store, archive, audit, ae_title: str, sender: ObjectSender,
                 commitment: commitment_mod.CommitmentService | None = None) -> list[DimseService]:
    commitment_service = commitment or commitment_mod.CommitmentService(archive, index, peers, ae_title, audit)
    return [
        echo.service(),
        store.service(ingestor, peers),
        find.service(index, ae_title, peers),
        worklist.service(worklist_store, peers),
        move.service(index, peers, sender, audit),
        get.service(index, peers, sender, audit),
        commitment_service.service(),
        mpps.MppsService(index, audit).service(),
    ]


def watchers() -> list:
    """The notification handlers the services need on the node besides their DIMSE handlers."""
    return list(get.watchers())
