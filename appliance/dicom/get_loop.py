"""The C-GET SCP's sub-operation loop: the box's own instead of pynetdicom's ``_get_scp``.

pynetdicom (3.0) runs a C-GET handler's sub-operations in ``QueryRetrieveServiceClass._get_scp``:
per sub-operation it validates the yielded status through the response primitive's setters,
builds a pydicom Dataset for the C-STORE's answer (``send_c_store`` must return one), checks
the association through ``_wrap_handler`` and logs three lines: ~10-15 ms of a 100-instance
C-GET (py-spy, bench/README.md "Session 7: C-GET"), more than the Orthanc's whole retrieve
costs per instance. ``serve_get`` does the same job from the same handler (EVT_C_GET, triggered
as pynetdicom triggers it, so the registry's dispatch and the handler stay as they are) and
keeps every rule of PS3.4 C.4.3.1.3 and of pynetdicom's loop:

- the handler yields the number of sub-operations first (not an int: 0xC413; more than
  65535: 0xC416; fewer than 1: Success with zero counts), then (status, dataset) pairs;
- Pending with a dataset: one C-STORE sub-operation on this association, then a Pending
  C-GET-RSP with the remaining, completed, failed and warning counts; a failed
  sub-operation (a failure status, no answer, nothing to send it in) adds its SOP Instance
  UID to the Failed SOP Instance UID List; an exception in the handler: 0xC411;
- Cancel: the counts with the remaining ones, and the failed list; Failure or Warning
  yielded by the handler: the not-yet-run sub-operations count as failed; Success yielded
  early: ends it (Warning 0xB000 with the list if anything failed);
- at the end: Success, Warning 0xB000 (some failed or warned) or Failure 0xA702 (all failed),
  the last two with the Failed SOP Instance UID List;
- an A-ABORT or A-RELEASE-RQ from the peer between sub-operations ends it without a response.

Pending responses go out through ``outbound.Outbound`` (encoded here, held to leave with the next
C-STORE-RQ) when it is installed; otherwise, and for every final response, as a pynetdicom
C_GET primitive through ``dimse.send_msg``, so handlers watching messages or PDUs and TLS
stay on pynetdicom's path. ``install`` (EVT_ESTABLISHED) routes an accepted association's C-GET
requests here (``_serve_request``, an instance attribute); every other request, and a C-GET
on a context the association does not have, goes pynetdicom's way unchanged.
"""
from __future__ import annotations

import logging
import struct
from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_GET
from pynetdicom.dsutils import encode
from pynetdicom.service_class import QueryRetrieveServiceClass
from pynetdicom.status import QR_GET_SERVICE_CLASS_STATUS, STORAGE_SERVICE_CLASS_STATUS

from .outbound import C_GET_RSP, retrieve_response
from .status import PENDING, SUCCESS

log = logging.getLogger(__name__)

_COUNTS = struct.Struct("<" + "HHIH" * 4).pack  # (0000,1020)-(0000,1023), US each, implicit VR little endian
HANDLER_FAILED, BAD_COUNT, TOO_MANY = 0xC411, 0xC413, 0xC416  # pynetdicom's codes for a broken handler
ALL_FAILED, SOME_FAILED = 0xA702, 0xB000


def _category(code: int, table: dict) -> str:
    return table[code][0] if code in table else "Failure"


def _store_category(code: int | None) -> str:
    """Success, Warning or Failure for a C-STORE-RSP status (PS3.4 B.2.3; unknown or none: Failure)."""
    return "Failure" if code is None else _category(code, STORAGE_SERVICE_CLASS_STATUS)


def install(event) -> None:
    """EVT_ESTABLISHED: this (accepted) association's C-GET requests run through ``serve_get``."""
    assoc = event.assoc
    if not assoc.is_acceptor or "_serve_request" in assoc.__dict__:
        return
    original = assoc._serve_request

    def serve_request(msg, context_id: int) -> None:
        context = assoc._accepted_cx.get(context_id)
        if type(msg) is not C_GET or context is None or assoc._sent_release or not msg.is_valid_request \
                or str(msg.AffectedSOPClassUID) != str(context.abstract_syntax) \
                or str(context.abstract_syntax) not in QueryRetrieveServiceClass._SUPPORTED_UIDS["C-GET"]:
            original(msg, context_id)
            return
        try:
            assoc.dimse.cancel_req = {}  # as _serve_request: C-CANCELs received before this request
            assoc._is_paused = True  # the handler's C-STOREs read their answers on this thread
            serve_get(assoc, msg, context)
            assoc._is_paused = False
            assoc.dimse.cancel_req = {}
        except Exception:  # noqa: BLE001 - as pynetdicom's _serve_request: log, abort, keep the node up
            log.exception("C-GET failed")
            assoc.abort()

    assoc._serve_request = serve_request


class GetResponses:
    """The C-GET-RSPs of one request: Pending ones encoded here when outbound.py sends this association's
    messages, every other one as a pynetdicom primitive."""

    def __init__(self, assoc, req: C_GET, context):
        self.assoc, self.context = assoc, context
        self.context_id = context.context_id
        self.msg_id = req.MessageID
        self.sop_class = str(req.AffectedSOPClassUID)
        outbound = getattr(assoc.dimse, "_pacs_outbound", None)
        self.outbound = outbound if outbound is not None and assoc.dimse.send_msg == outbound.send_msg else None
        self.pending_command = PendingCommand(self.msg_id, self.sop_class)

    def pending(self, remaining: int, completed: int, failed: int, warning: int) -> None:
        if self.outbound is not None:
            command = self.pending_command(remaining, completed, failed, warning)
            self.outbound.send(self.context_id, command, hold=True)  # leaves with the next message
            return
        self.send(PENDING, (remaining, completed, failed, warning))

    def send(self, status, counts: tuple | None = None, failed_uids: list[str] | None = None) -> None:
        """Any response: ``status`` an int or a status Dataset (its ErrorComment and the like kept, as
        pynetdicom's ``validate_status``); ``counts`` (remaining or None, completed, failed, warning)."""
        rsp = C_GET()
        rsp.MessageIDBeingRespondedTo = self.msg_id
        rsp.AffectedSOPClassUID = self.sop_class
        if isinstance(status, int):
            rsp.Status = status
        else:
            service = QueryRetrieveServiceClass(self.assoc)
            service.statuses = QR_GET_SERVICE_CLASS_STATUS
            service.validate_status(status, rsp)
        if counts is not None:
            remaining, completed, failed, warning = counts
            if remaining is not None:
                rsp.NumberOfRemainingSuboperations = remaining
            rsp.NumberOfCompletedSuboperations = completed
            rsp.NumberOfFailedSuboperations = failed
            rsp.NumberOfWarningSuboperations = warning
        if failed_uids is not None:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed_uids
            ts = self.context.transfer_syntax[0]
            rsp.Identifier = BytesIO(encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated))
        self.assoc.dimse.send_msg(rsp, self.context_id)


class PendingCommand:
    """The command sets of one request's Pending C-GET-RSPs (``outbound.retrieve_response``'s bytes): made
    once but for the four counts, which end it and have fixed lengths."""

    def __init__(self, msg_id: int, sop_class: str):
        self.head = retrieve_response(C_GET_RSP, msg_id, sop_class, PENDING, 0, 0, 0, 0)[:-40]

    def __call__(self, remaining: int, completed: int, failed: int, warning: int) -> bytes:
        return self.head + _COUNTS(0, 0x1020, 2, remaining, 0, 0x1021, 2, completed, 0, 0x1022, 2, failed,
                                   0, 0x1023, 2, warning)


def _sub_operation(assoc, dataset, msg_id: int) -> int | None:
    """C-STORE ``dataset`` on the requestor's association; its status, or None when it failed to happen."""
    store = getattr(assoc, "pacs_store_status", None)  # scu.ObjectSender.install: no Dataset in between
    try:
        if store is not None:
            return store(dataset, msg_id)
        return assoc.send_c_store(dataset, msg_id=msg_id).Status
    except Exception as exc:  # noqa: BLE001 - a failed sub-operation, counted and listed (the sender logged why)
        log.debug("C-STORE sub-operation failed: %s", exc)
        return None


def serve_get(assoc, req: C_GET, context) -> None:
    """Run one C-GET request's handler and its sub-operations (the rules: module docstring)."""
    responses = GetResponses(assoc, req, context)
    try:
        handler = evt.trigger(assoc, evt.EVT_C_GET, {"request": req, "context": context.as_tuple,
                                                     "_is_cancelled": _is_cancelled(assoc)})
    except Exception:  # noqa: BLE001 - no handler bound, or it failed before its first yield
        log.exception("Exception in the handler bound to EVT_C_GET")
        responses.send(HANDLER_FAILED)
        return
    if not assoc.is_established:
        return
    try:
        total = int(next(handler))
    except Exception:  # noqa: BLE001 - the handler's error, answered as pynetdicom answers it
        log.exception("The C-GET handler yielded no valid number of sub-operations")
        responses.send(BAD_COUNT)
        return
    if total < 1:
        responses.send(SUCCESS, (None, 0, 0, 0))
        return
    if total > 65535:  # the counts are US values (PS3.7 9.3.3.2)
        log.error("The C-GET handler yielded more than 65535 matches")
        responses.send(TOO_MANY)
        return
    remaining, completed, failed, warning = total, 0, 0, 0
    failed_uids: list[str] = []
    pending_sent = False
    acse = assoc.acse
    for number in range(1, 1 << 31):
        try:
            result = next(handler)
        except StopIteration:
            break
        except Exception:  # noqa: BLE001
            log.exception("Exception in the C-GET handler")
            result = (HANDLER_FAILED, None)
        if acse.is_aborted() or acse.is_release_requested() or not assoc.is_established:
            return  # the peer ended it: no response
        if remaining <= 0:
            log.warning("The C-GET handler yielded more results than sub-operations; ignored")
            break
        code, dataset = result
        kind = _category(int(code if isinstance(code, int) else getattr(code, "Status", -1)),
                         QR_GET_SERVICE_CLASS_STATUS)
        if kind == "Pending" and dataset:
            msg_id = (req.MessageID + number) % 65536 or 1
            store = _store_category(_sub_operation(assoc, dataset, msg_id))
            if store == "Failure":
                failed += 1
                uid = getattr(dataset, "SOPInstanceUID", None)
                if uid is not None:
                    failed_uids.append(str(uid))
            elif store == "Warning":
                warning += 1
            else:
                completed += 1
            remaining -= 1
            responses.pending(remaining, completed, failed, warning)
            pending_sent = True
        elif kind == "Cancel":
            responses.send(code, (remaining, completed, failed, warning), failed_uids)
            return
        elif kind in ("Failure", "Warning"):
            responses.send(code, (None if not pending_sent else remaining, completed, failed + remaining, warning),
                           failed_uids)
            return
        elif kind == "Success":
            if failed or warning:
                responses.send(SOME_FAILED, (remaining if pending_sent else None, completed, failed, warning),
                               failed_uids)
            else:
                responses.send(code, (remaining if pending_sent else None, completed, failed, warning))
            return
        else:  # Pending without a dataset: nothing to send, as pynetdicom ignores it
            continue
    if not assoc.is_established:
        return
    counts = (remaining if pending_sent else None, completed, failed, warning)
    if not failed and not warning:
        responses.send(SUCCESS, counts)
    else:
        responses.send(ALL_FAILED if failed == total else SOME_FAILED, counts, failed_uids)


def _is_cancelled(assoc):
    """``event.is_cancelled`` for the handler: a C-CANCEL-RQ for this message ID (taken once)."""
    def is_cancelled(msg_id: int) -> bool:
        return assoc.dimse.cancel_req.pop(msg_id, None) is not None
    return is_cancelled
