"""Studies whose only copy is offsite (recycled to free space), as study records the query engine can return.

A recycled study's index rows are gone, but ``RecycledStudy`` remembers who and
what it was. A doctor looking for last year's study must still find it, so the
study list, a patient's priors and QIDO-RS ask ``query.search(...,
include_offsite=True)`` and get these records beside the live ones, marked with
Instance Availability (0008,0056) NEARLINE (PS3.4 C.4.23.1.1: retrievable, not at
once) and ``_offsite``. C-FIND does not ask: a peer would try to C-MOVE them.

Matching follows the engine's rules for the keys a recycled study remembers
(names folded, fuzzy words, wildcards, UID lists, date ranges, modalities);
a non-universal key it does not remember never matches. Recycled studies are
few (each freed a study's worth of disk), so they are matched here in Python.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any, Mapping

from .models.recycle import RecycledStudy
from .names import fold, words

NEARLINE = "NEARLINE"
ONLINE = "ONLINE"

# The STUDY-level keys a recycled study remembers: keyword -> (column, kind)
_KEYS = {
    "PatientName": ("patient_name", "PN"), "PatientID": ("patient_id", "ID"),
    "StudyInstanceUID": ("study_uid", "UID"), "StudyDate": ("study_date", "DA"),
    "AccessionNumber": ("accession", "TEXT"), "StudyDescription": ("description", "TEXT"),
    "ModalitiesInStudy": ("modalities", "MULTI"),
}
# Universal or not remembered: these keys never exclude a recycled study when left empty.
_UNIVERSAL = {"", "*"}


def _glob(pattern: str, text: str) -> bool:
    if "*" in pattern or "?" in pattern:
        return re.fullmatch(fnmatch.translate(pattern.replace("[", "[[]")), text, re.S) is not None
    return pattern == text


def _matches(kind: str, value: str, stored: str, *, case_sensitive_names: bool, fuzzy: bool,
             case_sensitive_ids: bool) -> bool:
    if kind == "UID":
        return stored in [u.strip() for u in value.split("\\") if u.strip()]
    if kind == "DA":
        if "-" in value:
            lo, _, hi = value.partition("-")
            return bool(stored) and (not lo.strip() or stored >= lo.strip()) and (not hi.strip() or stored <= hi.strip())
        return stored == value
    if kind == "MULTI":
        have = [v for v in stored.split("\\") if v]
        return any(v.strip() in have for v in value.split("\\") if v.strip())
    if kind == "PN":
        if fuzzy:
            name = fold(stored)
            return all(w.strip("*") in name for w in words(value))
        if not case_sensitive_names:
            value, stored = fold(value), fold(stored)
        return _glob(value, stored)
    if kind == "ID" and not case_sensitive_ids:
        value, stored = value.upper(), stored.upper()
    return any(_glob(v, stored) for v in value.split("\\"))


def _record(rs: RecycledStudy, keywords: tuple[str, ...]) -> dict[str, Any]:
    record: dict[str, Any] = {k: None if k.startswith("NumberOf") else "" for k in keywords}
    record.update({
        "PatientName": rs.patient_name, "PatientID": rs.patient_id, "StudyInstanceUID": rs.study_uid,
        "StudyDate": rs.study_date, "AccessionNumber": rs.accession, "StudyDescription": rs.description,
        "ModalitiesInStudy": [v for v in rs.modalities.split("\\") if v],
        "NumberOfStudyRelatedInstances": rs.num_instances, "QueryRetrieveLevel": "STUDY",
        "InstanceAvailability": NEARLINE, "_offsite": True, "_id": None,
        "_recycled_at": rs.recycled_at,
    })
    return record


def offsite_studies(criteria: Mapping[str, Any], keywords: tuple[str, ...], *, live_uids: set[str] | None = None,
                    case_sensitive_names: bool = False, fuzzy: bool = False, case_sensitive_ids: bool = True,
                    db) -> list[dict[str, Any]]:
    """Recycled, not restored studies matching ``criteria``, newest first, as STUDY records.

    ``db``: the index database to read.
    """
    wanted = {}
    for keyword, value in criteria.items():
        if value is None:
            continue
        value = "\\".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value).strip()
        if value in _UNIVERSAL:
            continue
        if keyword not in _KEYS:
            if keyword == "InstanceAvailability" and NEARLINE in value.split("\\"):
                continue
            return []  # a condition a recycled study cannot be checked against
        wanted[keyword] = value
    found, seen = [], set()
    rows = (RecycledStudy.select().where(RecycledStudy.restored_at.is_null())
            .order_by(RecycledStudy.study_date.desc(), RecycledStudy.recycled_at.desc()))
    for rs in rows.execute(db):
        if rs.study_uid in seen or (live_uids is not None and rs.study_uid in live_uids):
            continue  # recycled twice, or partly received again since: the live rows speak for it
        if all(_matches(_KEYS[k][1], v, str(getattr(rs, _KEYS[k][0]) or ""), case_sensitive_names=case_sensitive_names,
                        fuzzy=fuzzy, case_sensitive_ids=case_sensitive_ids) for k, v in wanted.items()):
            seen.add(rs.study_uid)
            found.append(_record(rs, keywords))
    return found
