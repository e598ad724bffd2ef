"""The audit log: who did what, when, to which patient or study.

CONTRACT (others call this; the web-foundation work makes it a tamper-evident,
append-only table with viewing, filtering and CSV export):
``AuditLog.record(action, actor, *, address="", patient_id="", study_uid="", detail="")``
- action: short dotted verb, e.g. "login.ok", "login.failed", "study.view",
  "study.export", "instance.delete", "user.create", "config.change",
  "dicom.association", "dicom.store", "dicom.find", "dicom.move", "import.run",
  "backup.run", "restore.run";
- actor: user name, or "dicom:<calling AE>", or "system".
It never raises into the caller: an audit failure is logged loudly instead.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, index):
        self.index = index

    def record(self, action: str, actor: str, *, address: str = "", patient_id: str = "", study_uid: str = "",
               detail: str = "") -> None:
        log.debug("audit %s by %s", action, actor)  # placeholder until the audit table lands
