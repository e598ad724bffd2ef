"""Auditing C-FIND per association: one "dicom.find" entry when an association that queried closes.

A modality polling the worklist makes one entry per poll, not one per request. The
entry names the levels queried and the patient IDs asked for (exact ones, at most
ten). C-MOVE, C-GET, storage commitment and MPPS are audited by their own handlers,
stores by the audit log's per-study aggregation (appliance/records/audit.py).

This watches notification events, so it sees every C-FIND whichever service
answers it, and never changes an answer.
"""
from __future__ import annotations

import threading

from pynetdicom import evt
from pynetdicom.dsutils import decode

C_FIND_RQ = 0x0020  # PS3.7 E.1 Command Field
MAX_PATIENTS = 10


class QueryAudit:
    def __init__(self, audit):
        self.audit = audit  # appliance.records.audit.AuditLog: record(action, actor, ...)
        self._queries: dict[int, dict] = {}  # id(association) -> C-FIND count, levels, patient IDs
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple]:
        """The (event, handler) pairs to watch on the node (DicomNode.watch)."""
        return [(evt.EVT_DIMSE_RECV, self.on_dimse_recv), (evt.EVT_RELEASED, self.on_association_closed),
                (evt.EVT_ABORTED, self.on_association_closed)]

    def on_dimse_recv(self, event) -> None:
        try:
            if event.message.command_set.CommandField != C_FIND_RQ:  # skip stores cheaply
                return
            primitive = event.message.message_to_primitive()
        except Exception:  # noqa: BLE001 - never disturb the association
            return
        level, patient_id = "", ""
        try:
            cx = next(c for c in event.assoc.accepted_contexts if c.context_id == event.message.context_id)
            ts = cx.transfer_syntax[0]
            identifier = decode(primitive.Identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
            level = str(identifier.get("QueryRetrieveLevel", "") or "WORKLIST")
            patient_id = str(identifier.get("PatientID", "") or "")
        except Exception:  # noqa: BLE001 - an undecodable query is still counted
            pass
        with self._lock:
            q = self._queries.setdefault(id(event.assoc), {"count": 0, "levels": set(), "patients": set()})
            q["count"] += 1
            if level:
                q["levels"].add(level)
            if patient_id and "*" not in patient_id and "?" not in patient_id and len(q["patients"]) < MAX_PATIENTS:
                q["patients"].add(patient_id)

    on_dimse_recv.command_values_only = True  # skips all but C-FIND requests by command_set.CommandField

    def on_association_closed(self, event) -> None:
        with self._lock:
            q = self._queries.pop(id(event.assoc), None)
        if not q:
            return
        patients = sorted(q["patients"])
        detail = f"{q['count']} C-FIND ({', '.join(sorted(q['levels'])) or 'unknown level'})"
        if len(patients) > 1:
            detail += f"; patient IDs {', '.join(patients)}"
        self.audit.record("dicom.find", f"dicom:{event.assoc.requestor.ae_title.strip()}",
                          address=event.assoc.requestor.address, patient_id=patients[0] if len(patients) == 1 else "",
                          detail=detail)
