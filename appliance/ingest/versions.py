"""Versions of an instance: what a replacement displaced, and what the policy held aside
(the ingest policy, in __init__.py).

``pacs-appliance storage versions`` and the admin page Replacements use this one class:

- ``list``: replaced versions and held newcomers, with the patient and study each names
  and those of the current instance;
- ``restore``: make a version the current instance again (for a held one: accept it).
  The current object becomes a version in turn, so a restore can itself be undone. The
  object is read back and every tag checked first; its index rows are rebuilt from its
  own header, in one transaction. Audited as ``instance.version.restore``;
- ``discard``: delete a *held* object (an admin's explicit decision; replaced versions
  are history and stay). Audited as ``instance.version.discard``.
"""
from __future__ import annotations

import io
import logging

from ..errors import ApplianceError, NotFound
from ..index.versions import Version, count_held, get_version, list_versions, take_version
from .dicomfile import parse

log = logging.getLogger(__name__)


class VersionChanged(ApplianceError):
    http_status = 409


class Versions:
    def __init__(self, index, archive, audit):
        self.index = index
        self.archive = archive
        self.audit = audit

    def list(self, sop_uid: str | None = None, held: bool | None = None, limit: int | None = 500) -> list[Version]:
        return list_versions(self.index.db, sop_uid, held, limit)

    def held_count(self) -> int:
        return count_held(self.index.db)

    def get(self, object_id: str) -> Version:
        v = get_version(self.index.db, object_id)
        if v is None:
            raise NotFound(f"no replaced or held version with object id {object_id} "
                           "(`pacs-appliance storage versions` lists them)")
        return v

    def restore(self, object_id: str, actor: str, address: str = "") -> Version:
        v = self.get(object_id)
        data = self.archive.read(object_id)  # every tag checked
        parsed = parse(io.BytesIO(data), len(data))
        a = parsed.attributes
        if a.sop_uid != v.sop_uid:
            raise VersionChanged(f"object {object_id} holds another SOP Instance UID than its version row")

        def swap():
            if not take_version(self.index.db, object_id, v.sha256):
                raise VersionChanged(f"version {object_id} changed meanwhile; list the versions again")
            self.index.studies.record(a, object_id, v.size, v.sha256, v.source, decide=lambda _prior: "replace")

        self.index.writer.submit(swap).result()
        self.audit.record("instance.version.restore", actor, address=address, patient_id=a.patient_id,
                          study_uid=a.study_uid,
                          detail=f"SOP Instance UID {v.sop_uid}: {'accepted held' if v.held else 'restored'} version "
                                 f"{object_id} (patient {a.patient_id or '(none)'}, study {a.study_uid}); it replaced "
                                 f"{v.current_object_id or 'nothing'} (patient {v.current_patient_id or '(none)'}, "
                                 f"study {v.current_study_uid or '-'})")
        log.info("instance %s: version %s made current by %s", v.sop_uid, object_id, actor)
        return v

    def discard(self, object_id: str, actor: str, address: str = "") -> Version:
        v = self.get(object_id)
        if not v.held:
            raise VersionChanged(f"version {object_id} is a replaced version, kept as history; only objects held "
                                 "for an admin can be discarded")
        if not self.index.writer.submit(lambda: take_version(self.index.db, object_id, v.sha256)).result():
            raise VersionChanged(f"version {object_id} changed meanwhile; list the versions again")
        self.archive.delete(object_id)
        self.audit.record("instance.version.discard", actor, address=address, patient_id=v.patient_id,
                          study_uid=v.study_uid,
                          detail=f"SOP Instance UID {v.sop_uid}: discarded held object {object_id} from {v.source}")
        return v
