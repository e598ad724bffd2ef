"""The one query engine: DICOM matching over the index (PS3.4 C.2.2.2).

C-FIND, QIDO-RS, the web study list and the worklist all call ``search`` with
a level and a mapping of DICOM keyword -> query value as a peer would send it:

- empty value: universal matching (no condition);
- ``A\\B``: list matching (any of the values), for UIDs and other strings;
- ``*`` and ``?`` in a string: wildcard matching (not for UIDs, dates, numbers);
- ``A-B``, ``A-``, ``-B`` on dates and times: range matching, inclusive;
- otherwise: single value matching.

Person names match without regard to case or accents unless the caller asks
otherwise (most clinics never type names as the modality sent them: "muller"
finds "MÜLLER^HANS"; see names.py); ``fuzzy`` matches a name the way people
type it: every word of the value, in any order, anywhere in the name, with or
without commas or carets ("Moore, Sara" and "sara moore" find "MOORE^SARA").
Patient IDs match without regard to case when the caller says so (the study list).

Each record returned is a dict of keyword -> value for the matched entity and
every level above it; callers pick the keys they were asked for.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from peewee import Database, Field, fn

from ..records.values import QueryError, normalize_date, normalize_time
from .dialect import Wildcard
from .models import Instance, Patient, Series, Study
from .names import fold, words
from .offsite import ONLINE, offsite_studies

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
UID, PN, DA, TM, TEXT, INT, MULTI = "UID", "PN", "DA", "TM", "TEXT", "INT", "MULTI"


@dataclass(frozen=True)
class Attr:
    level: str
    field: Field
    kind: str
    tag: int


def _a(level: str, field: Field, kind: str, tag: int) -> Attr:
    return Attr(level, field, kind, tag)


ATTRS: dict[str, Attr] = {
    # Patient
    "PatientName": _a("PATIENT", Patient.name, PN, 0x00100010),
    "PatientID": _a("PATIENT", Patient.patient_id, TEXT, 0x00100020),
    "IssuerOfPatientID": _a("PATIENT", Patient.issuer, TEXT, 0x00100021),
    "PatientBirthDate": _a("PATIENT", Patient.birth_date, DA, 0x00100030),
    "PatientSex": _a("PATIENT", Patient.sex, TEXT, 0x00100040),
    "NumberOfPatientRelatedStudies": _a("PATIENT", Patient.num_studies, INT, 0x00201200),
    "NumberOfPatientRelatedSeries": _a("PATIENT", Patient.num_series, INT, 0x00201202),
    "NumberOfPatientRelatedInstances": _a("PATIENT", Patient.num_instances, INT, 0x00201204),
    # Study
    "StudyInstanceUID": _a("STUDY", Study.study_uid, UID, 0x0020000D),
    "StudyDate": _a("STUDY", Study.study_date, DA, 0x00080020),
    "StudyTime": _a("STUDY", Study.study_time, TM, 0x00080030),
    "AccessionNumber": _a("STUDY", Study.accession, TEXT, 0x00080050),
    "StudyID": _a("STUDY", Study.study_id, TEXT, 0x00200010),
    "StudyDescription": _a("STUDY", Study.description, TEXT, 0x00081030),
    "ReferringPhysicianName": _a("STUDY", Study.referring_physician, PN, 0x00080090),
    "PatientAge": _a("STUDY", Study.patient_age, TEXT, 0x00101010),
    "InstitutionName": _a("STUDY", Study.institution, TEXT, 0x00080080),
    "ModalitiesInStudy": _a("STUDY", Study.modalities, MULTI, 0x00080061),
    "SOPClassesInStudy": _a("STUDY", Study.sop_classes, MULTI, 0x00080062),
    "NumberOfStudyRelatedSeries": _a("STUDY", Study.num_series, INT, 0x00201206),
    "NumberOfStudyRelatedInstances": _a("STUDY", Study.num_instances, INT, 0x00201208),
    # Series
    "SeriesInstanceUID": _a("SERIES", Series.series_uid, UID, 0x0020000E),
    "Modality": _a("SERIES", Series.modality, TEXT, 0x00080060),
    "SeriesNumber": _a("SERIES", Series.series_number, INT, 0x00200011),
    "SeriesDescription": _a("SERIES", Series.description, TEXT, 0x0008103E),
    "BodyPartExamined": _a("SERIES", Series.body_part, TEXT, 0x00180015),
    "SeriesDate": _a("SERIES", Series.series_date, DA, 0x00080021),
    "SeriesTime": _a("SERIES", Series.series_time, TM, 0x00080031),
    "StationName": _a("SERIES", Series.station_name, TEXT, 0x00081010),
    "NumberOfSeriesRelatedInstances": _a("SERIES", Series.num_instances, INT, 0x00201209),
    # Instance
    "SOPInstanceUID": _a("IMAGE", Instance.sop_uid, UID, 0x00080018),
    "SOPClassUID": _a("IMAGE", Instance.sop_class_uid, UID, 0x00080016),
    "InstanceNumber": _a("IMAGE", Instance.instance_number, INT, 0x00200013),
    "Rows": _a("IMAGE", Instance.rows, INT, 0x00280010),
    "Columns": _a("IMAGE", Instance.columns, INT, 0x00280011),
    "NumberOfFrames": _a("IMAGE", Instance.frames, INT, 0x00280008),
    "ContentDate": _a("IMAGE", Instance.content_date, DA, 0x00080023),
    "ContentTime": _a("IMAGE", Instance.content_time, TM, 0x00080033),
    "AvailableTransferSyntaxUID": _a("IMAGE", Instance.transfer_syntax, UID, 0x00083002),
}
KEYWORD_BY_TAG = {a.tag: k for k, a in ATTRS.items()}
MODEL_BY_LEVEL = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series, "IMAGE": Instance}
_TS_DIGITS = re.compile(r"[^0-9.]")
FETCH_BATCH = 256  # rows per fetch when records are streamed (iter_search)


def condition(attr: Attr, value: str, case_sensitive_names: bool, fuzzy: bool, case_sensitive_ids: bool = True):
    field = attr.field
    kind = attr.kind
    if field is Patient.patient_id and not case_sensitive_ids:
        field, value = fn.UPPER(field), value.upper()
    if kind == UID:
        if "*" in value or "?" in value:
            raise QueryError("wildcards are not allowed in UIDs")
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        if not uids:
            raise QueryError(f"({attr.tag >> 16:04X},{attr.tag & 0xFFFF:04X}): an empty UID list")
        return field.in_(uids) if len(uids) > 1 else field == uids[0]
    if kind in (DA, TM):
        norm = normalize_date if kind == DA else normalize_time
        if "-" in value:
            lo, _, hi = value.partition("-")
            cond = None
            if lo.strip():
                cond = field >= norm(lo)
            if hi.strip():
                bound = normalize_date(hi) if kind == DA else normalize_time(hi, upper=True)
                cond = (field <= bound) if cond is None else (cond & (field <= bound))
            if cond is None:
                raise QueryError(f"empty range {value!r}")
            return cond
        if kind == TM:
            return (field >= normalize_time(value)) & (field <= normalize_time(value, upper=True))
        return field == norm(value)
    if kind == INT:
        try:
            numbers = [int(v) for v in value.split("\\") if v.strip()]
        except ValueError:
            raise QueryError(f"not a number: {value!r}") from None
        return field.in_(numbers) if len(numbers) > 1 else field == numbers[0]
    if kind == MULTI:
        values = [v.strip() for v in value.split("\\") if v.strip()]
        cond = None
        for v in values:
            c = field.contains("\\" + v + "\\")  # LIKE; modality codes and UIDs have no % or _
            cond = c if cond is None else (cond | c)
        return cond
    if kind == PN:
        if not case_sensitive_names or fuzzy:
            if field is Patient.name:
                field, value = Patient.name_upper, fold(value)  # name_upper holds the folded name
            else:
                field, value = fn.UPPER(field), value.upper()
        if fuzzy:
            cond = None
            for word in words(value) or ["*"]:
                c = Wildcard(field, "*" + word.strip("*") + "*")
                cond = c if cond is None else (cond & c)
            return cond
    # A backslash separates values, except in a person name where it cannot occur.
    values = value.split("\\") if kind != PN else [value]
    cond = None
    for v in values:
        c = Wildcard(field, v) if ("*" in v or "?" in v) else (field == v)
        cond = c if cond is None else (cond | c)
    return cond


@dataclass(frozen=True)
class _Columns:
    """What ``search`` reads at one level: one row tuple per match instead of a model instance per level."""
    fields: tuple  # the ATTRS fields at and above the level, then the extras
    keywords: tuple[str, ...]  # record keys of the ATTRS fields, in the same order
    multi: tuple[str, ...]  # those that hold a MULTI value ("\\CT\\MR\\" -> ["CT", "MR"])
    extras: tuple[str, ...]  # record keys of the remaining fields
    names: tuple[str, ...]  # keywords + extras: one key per column of the row


def _columns(level: str) -> _Columns:
    upto = LEVELS[: LEVELS.index(level) + 1]
    chosen = [(keyword, attr) for keyword, attr in ATTRS.items() if attr.level in upto]
    extras = [MODEL_BY_LEVEL[level].id] + ([Instance.object_id, Instance.size] if level == "IMAGE" else [])
    keywords = tuple(k for k, _ in chosen)
    extra_names = ("_id", "_object_id", "_size")[: len(extras)]
    return _Columns(fields=tuple(a.field for _, a in chosen) + tuple(extras), keywords=keywords,
                    multi=tuple(k for k, a in chosen if a.kind == MULTI), extras=extra_names,
                    names=keywords + extra_names)


COLUMNS = {level: _columns(level) for level in LEVELS}


def multi_values(stored: str) -> list[str]:
    """The values of a stored multi-valued attribute: "\\CT\\MR\\" -> ["CT", "MR"]."""
    return [v for v in stored.split("\\") if v]


def _record(row: tuple, columns: _Columns, level: str) -> dict[str, Any]:
    record: dict[str, Any] = dict(zip(columns.names, row))  # the ATTRS keywords, then the extras
    for keyword in columns.multi:
        record[keyword] = multi_values(record[keyword])
    record["QueryRetrieveLevel"] = level
    return record


def build_query(level: str, criteria: Mapping[str, str], *, case_sensitive_names: bool = False,
                fuzzy: bool = False, case_sensitive_ids: bool = True):
    """The peewee query for ``criteria`` at ``level`` (unknown keywords are ignored)."""
    level = level.upper()
    if level not in MODEL_BY_LEVEL:
        raise QueryError(f"unknown query level {level!r}")
    chain = [MODEL_BY_LEVEL[lvl] for lvl in reversed(LEVELS[: LEVELS.index(level) + 1])]
    query = chain[0].select(*chain)
    for parent in chain[1:]:
        query = query.switch(chain[chain.index(parent) - 1]).join(parent)
    for _keyword, attr, value in _restrictions(level, criteria):
        query = query.where(condition(attr, value, case_sensitive_names, fuzzy, case_sensitive_ids))
    return query


def _restrictions(level: str, criteria: Mapping[str, str]) -> Iterator[tuple[str, Attr, str]]:
    """(keyword, attribute, value) of each criterion that restricts a search at ``level``: unknown keywords,
    keys below the level (they cannot restrict it) and universal matching (empty, ``*``) restrict nothing;
    a list of values is sent on as DICOM's backslash-separated one."""
    top = LEVELS.index(level)
    for keyword, value in criteria.items():
        attr = ATTRS.get(keyword)
        if attr is None or value is None or LEVELS.index(attr.level) > top:
            continue
        value = str(value).strip() if not isinstance(value, (list, tuple)) else "\\".join(map(str, value))
        if value and value != "*":
            yield keyword, attr, value


ORDER: dict[str, Callable[[], Iterable]] = {
    "PATIENT": lambda: (Patient.name_upper, Patient.id),
    "STUDY": lambda: (Study.study_date.desc(), Study.study_time.desc(), Study.id.desc()),
    "SERIES": lambda: (Series.series_number, Series.id),
    "IMAGE": lambda: (Instance.instance_number, Instance.id),
}


def search(db: Database, level: str, criteria: Mapping[str, str], *, case_sensitive_names: bool = False,
           fuzzy: bool = False, case_sensitive_ids: bool = True, include_offsite: bool = False,
           limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """Records of ``db`` matching ``criteria`` at ``level``, in the level's natural order.

    ``include_offsite`` (STUDY level) adds the studies whose only copy is offsite (offsite.py),
    marked NEARLINE, among the live ones (marked ONLINE) in date order.
    """
    level = level.upper()
    how = {"case_sensitive_names": case_sensitive_names, "fuzzy": fuzzy, "case_sensitive_ids": case_sensitive_ids}
    if include_offsite and level == "STUDY":
        offsite = _offsite(db, criteria, how)
        if offsite:
            live = search(db, level, criteria, **how, limit=None if limit is None else offset + limit)
            for record in live:
                record["InstanceAvailability"] = ONLINE
            merged = sorted(live + offsite, key=lambda r: (r["StudyDate"] or "", r["StudyTime"] or ""), reverse=True)
            return merged[offset:] if limit is None else merged[offset:offset + limit]
    records = list(iter_search(db, level, criteria, **how, limit=limit, offset=offset))
    if include_offsite and level == "STUDY":
        for record in records:
            record["InstanceAvailability"] = ONLINE
    return records


def iter_search(db: Database, level: str, criteria: Mapping[str, str], *, case_sensitive_names: bool = False,
                fuzzy: bool = False, case_sensitive_ids: bool = True, limit: int | None = None,
                offset: int = 0, batch: int = FETCH_BATCH) -> Iterator[dict[str, Any]]:
    """``search``'s records one by one as the cursor gives them (``batch`` rows at a time), for a caller that
    sends each as it comes (C-FIND): a result of thousands of studies is never all in memory at once.

    The SQL runs (and a bad value raises QueryError) at the first ``next``; the read stays open until the
    iterator is exhausted or closed, so a caller consumes it promptly."""
    level = level.upper()
    uids = _single_uids(level, criteria) if level in COLUMNS and limit is None and not offset else None
    sql = _uid_lookup_sql(db, level, tuple(uids)) if uids is not None else None
    if sql is not None:
        params = list(uids.values())
    else:  # build_query refuses an unknown level (QueryError)
        sql, params = _search_sql(db, level, criteria, limit, offset, case_sensitive_names=case_sensitive_names,
                                  fuzzy=fuzzy, case_sensitive_ids=case_sensitive_ids)
    columns = COLUMNS[level]
    # The cursor's raw rows: SQLite's TEXT/INTEGER values are already what the fields' python_value would
    # make of them, and skipping peewee's per-column converters halves the time per row. ``batches`` reads
    # as it goes on either backend (PostgreSQL: a server-side cursor).
    for rows in db.batches(sql, params, batch):
        for row in rows:
            yield _record(row, columns, level)


def _search_sql(db: Database, level: str, criteria: Mapping[str, str], limit: int | None, offset: int,
                **how) -> tuple[str, list]:
    """The SQL and parameters of ``iter_search`` at ``level`` (upper case)."""
    query = build_query(level, criteria, **how).select(*COLUMNS[level].fields).order_by(*ORDER[level]())
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    sql, params = db.get_sql_context().sql(query).query()
    return sql, list(params)


def _single_uids(level: str, criteria: Mapping[str, str]) -> dict[str, str] | None:
    """The criteria that restrict a search at ``level`` when each is one UID (a retrieve, a WADO request: the
    same statement for every study, series or instance); None when any other kind of value restricts it."""
    uids: dict[str, str] = {}
    for keyword, attr, value in _restrictions(level, criteria):
        if attr.kind != UID or "\\" in value or "*" in value or "?" in value:
            return None
        uids[keyword] = value
    return uids


_UID_LOOKUPS: dict[tuple, str] = {}  # (database class, level, keywords) -> SQL whose parameters are the UIDs in order


def _uid_lookup_sql(db: Database, level: str, keywords: tuple[str, ...]) -> str | None:
    """The SQL ``_search_sql`` makes for single UIDs of ``keywords``, built once per shape (peewee builds a
    ~50-column join in ~1 ms, longer than SQLite then takes to answer a retrieve of one study); None if
    its parameters are not just the UIDs in order (then the caller builds it each time)."""
    key = (type(db), level, keywords)
    sql = _UID_LOOKUPS.get(key)
    if sql is None:
        markers = [f"1.{n}.999" for n in range(len(keywords))]
        sql, params = _search_sql(db, level, dict(zip(keywords, markers)), None, 0)
        if params != markers:
            return None
        _UID_LOOKUPS[key] = sql
    return sql


def _offsite(db: Database, criteria: Mapping[str, str], how: dict) -> list[dict[str, Any]]:
    found = offsite_studies(criteria, COLUMNS["STUDY"].keywords, db=db, **how)
    if not found:
        return found
    uids = [r["StudyInstanceUID"] for r in found]
    live = {uid for (uid,) in Study.select(Study.study_uid).where(Study.study_uid.in_(uids)).tuples().execute(db)}
    return [r for r in found if r["StudyInstanceUID"] not in live]  # partly received again: the live rows speak


def count(db: Database, level: str, criteria: Mapping[str, str], *, case_sensitive_names: bool = False,
          fuzzy: bool = False, case_sensitive_ids: bool = True, include_offsite: bool = False) -> int:
    how = {"case_sensitive_names": case_sensitive_names, "fuzzy": fuzzy, "case_sensitive_ids": case_sensitive_ids}
    live = build_query(level, criteria, **how).count(db)
    if include_offsite and level.upper() == "STUDY":
        live += len(_offsite(db, criteria, how))
    return live
