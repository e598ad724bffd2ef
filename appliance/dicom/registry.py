"""The DIMSE services the node offers, as one table: SOP classes, roles and the handler per event.

Each service module (echo.py, store.py, find.py, worklist.py, move.py, get.py, mpps.py,
commitment.py) declares one ``DimseService``: the SOP classes it serves, the role
selection it accepts, and which handler answers which DIMSE event. pynetdicom keeps
one handler per intervention event and silently replaces an earlier one; this registry
refuses a second claim on the same (event, SOP class) instead. Where several services
share an event (C-FIND: query/retrieve and the modality worklist) it binds one
dispatcher that picks the handler by the request's SOP class; an event with a single
handler is bound to it directly, so C-STORE and C-ECHO pay nothing for the registry.

The table is also what a DICOM Conformance Statement is generated from (``rows``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pynetdicom import ALL_TRANSFER_SYNTAXES

log = logging.getLogger(__name__)
ANY_SOP_CLASS = "*"


class DuplicateHandler(ValueError):
    """Two services claim the same DIMSE event for the same SOP class."""


@dataclass(frozen=True, eq=False)  # compared by identity: args may hold unhashable parts
class Handler:
    """``fn(event, *args)`` answers ``event`` (a pynetdicom intervention event such as evt.EVT_C_FIND)."""

    event: Any
    fn: Callable[..., Any]
    args: tuple = ()


@dataclass(frozen=True)
class DimseService:
    """One DIMSE service of the node (our role: SCP for ``sop_classes``).

    ``any_sop_class``: also handle SOP classes not listed (storage takes new and private
    ones; node.py turns on pynetdicom's unrestricted storage). ``requestor_scp_for``: SOP
    classes for which a requestor may propose itself as SCP with SCP/SCU role selection
    (C-GET: the instances go back as C-STOREs on its association, we are their SCU).
    ``reference``: where the standard defines the service, for the conformance statement.
    """

    name: str
    sop_classes: tuple[str, ...]
    handlers: tuple[Handler, ...]
    any_sop_class: bool = False
    requestor_scp_for: tuple[str, ...] = ()
    transfer_syntaxes: tuple[str, ...] = tuple(ALL_TRANSFER_SYNTAXES)
    reference: str = ""

    def contexts(self) -> Iterator[tuple[str, list[str], bool | None, bool | None]]:
        """(abstract syntax, transfer syntaxes, scu_role, scp_role) for ``AE.add_supported_context``."""
        for uid in self.sop_classes:
            yield uid, list(self.transfer_syntaxes), None, None
        for uid in self.requestor_scp_for:
            yield uid, list(self.transfer_syntaxes), True, True


@dataclass(frozen=True)
class Row:
    """One line of the conformance table: a SOP class, our role in it, and the service serving it."""

    service: str
    sop_class: str
    role: str  # "SCP", or "SCU" (we send it, on the requestor's association)
    messages: tuple[str, ...]  # the DIMSE requests of the role, e.g. ("N-CREATE", "N-SET")
    reference: str


class ServiceRegistry:
    def __init__(self) -> None:
        self.services: list[DimseService] = []
        self._claims: dict[tuple[Any, str], tuple[DimseService, Handler]] = {}

    def register(self, service: DimseService) -> None:
        """Add ``service``; DuplicateHandler if it claims an (event, SOP class) another service has."""
        claims: dict[tuple[Any, str], tuple[DimseService, Handler]] = {}
        keys = (ANY_SOP_CLASS,) if service.any_sop_class else service.sop_classes
        for handler in service.handlers:
            if not getattr(handler.event, "is_intervention", False):
                raise ValueError(f"{service.name}: {handler.event.name} is a notification event, not a DIMSE "
                                 "request; watch it with DicomNode.watch")
            for uid in keys:
                key = (handler.event, uid)
                other = claims.get(key) or self._claims.get(key) or self._wildcard_clash(handler.event, uid, claims)
                if other is not None:
                    raise DuplicateHandler(f"{service.name} and {other[0].name} both handle {handler.event.name} "
                                           f"for SOP class {uid}: one DIMSE event has one handler per SOP class")
                claims[key] = (service, handler)
        self._claims.update(claims)
        self.services.append(service)

    def _wildcard_clash(self, event, uid: str, pending: dict):
        for (claimed_event, claimed_uid), claim in (*self._claims.items(), *pending.items()):
            if claimed_event is event and ANY_SOP_CLASS in (uid, claimed_uid):
                return claim
        return None

    def evt_handlers(self) -> list[tuple[Any, Callable, list]]:
        """The (event, handler, args) triples to give pynetdicom: one per event."""
        by_event: dict[Any, dict[str, Handler]] = {}
        for (event, uid), (_service, handler) in self._claims.items():
            by_event.setdefault(event, {})[uid] = handler
        bound = []
        for event, table in by_event.items():
            distinct = {id(h): h for h in table.values()}
            if len(distinct) == 1:
                handler = next(iter(distinct.values()))
                bound.append((event, handler.fn, list(handler.args)))
            else:
                bound.append((event, dispatch, [table]))
        return bound

    def rows(self) -> list[Row]:
        """The conformance table: every SOP class the node serves, with our role and events."""
        rows = []
        for s in self.services:
            messages = tuple(h.event.name.removeprefix("EVT_").replace("_", "-") for h in s.handlers)
            rows += [Row(s.name, uid, "SCP", messages, s.reference) for uid in s.sop_classes]
            rows += [Row(s.name, uid, "SCU", ("C-STORE",), s.reference) for uid in s.requestor_scp_for]
        return rows


def dispatch(event, table: dict[str, Handler]):
    """The handler for an event several services share: the one declared for the request's SOP class."""
    request = event.request
    # N-SET, N-ACTION, N-GET and N-DELETE name the class as Requested; the rest as Affected.
    uid = str(getattr(request, "RequestedSOPClassUID", None) or request.AffectedSOPClassUID or "")
    handler = table.get(uid) or table.get(ANY_SOP_CLASS)
    if handler is None:  # only a request whose SOP class differs from its presentation context's gets here
        raise LookupError(f"no service handles {event.event.name} for SOP class {uid}")
    return handler.fn(event, *handler.args)
