"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Matching goes through the shared query engine (``index.search``), so C-FIND and
QIDO-RS answer the same. Query keys may be keywords or tags (``00100010``).
Keys the index cannot match on are ignored with a Warning header, as PS3.18
allows. ``includefield`` adds attributes; those the index does not keep are read
from a stored header (cached, and bounded by the result limit).
"""
from __future__ import annotations

from typing import Any

from flask import request
from pydicom.dataset import Dataset

from appliance.index.query import ATTRS, LEVELS, QueryError

from . import dicomjson
from .blueprint import audit, base_url, bp, json_response, read_access
from .context import check_uid, ctx
from .errors import BadRequest

MAX_RESULTS = 1000  # per request; more pages with offset
MAX_OFFSET = 10**9  # far past any archive, and far inside SQLite's 64-bit integers
STUDY_KEYS = ["StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
              "ReferringPhysicianName", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate",
              "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances"]
SERIES_KEYS = ["Modality", "SeriesDescription", "RetrieveURL", "SeriesInstanceUID", "SeriesNumber",
               "NumberOfSeriesRelatedInstances", "SeriesDate", "SeriesTime", "StudyInstanceUID"]
INSTANCE_KEYS = ["SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber",
                 "Rows", "Columns", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID"]
SPECIAL = {"limit", "offset", "fuzzymatching", "includefield"}


def _required(level: str, study_in_path: bool, series_in_path: bool) -> list[str]:
    if level == "STUDY":
        return list(STUDY_KEYS)
    if level == "SERIES":
        return SERIES_KEYS + ([] if study_in_path else STUDY_KEYS)
    keys = list(INSTANCE_KEYS)
    if not series_in_path:
        keys += SERIES_KEYS
    if not study_in_path:
        keys += STUDY_KEYS
    return keys


def _int_arg(name: str, default: int | None) -> int | None:
    value = request.args.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {value[:40]!r}") from None
    if number < 0:
        raise BadRequest(f"{name} must not be negative")
    if number > MAX_OFFSET:
        raise BadRequest(f"{name} must be at most {MAX_OFFSET}")
    return number


def _parse(level: str) -> tuple[dict[str, str], list[str], bool, list[str], bool]:
    """criteria, extra keywords to return, include all, warnings, fuzzy."""
    criteria: dict[str, str] = {}
    include: list[str] = []
    include_all = False
    warnings: list[str] = []
    top = LEVELS.index(level)
    for name in request.args:
        lname = name.lower()
        if lname in SPECIAL:
            continue
        values = request.args.getlist(name)
        if "." in name:
            warnings.append(f"sequence matching on {name} is not supported; the key was ignored")
            continue
        keyword = dicomjson.keyword_of(name)
        if keyword is None:
            raise BadRequest(f"unknown query key {name[:64]!r}: use a DICOM keyword or an 8-digit tag")
        attr = ATTRS.get(keyword)
        if attr is None or LEVELS.index(attr.level) > top:
            warnings.append(f"{keyword} cannot be matched at this level; the key was ignored")
            include.append(keyword)
            continue
        criteria[keyword] = values[-1]
        include.append(keyword)
    for value in request.args.getlist("includefield"):
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name.lower() == "all":
                include_all = True
                continue
            keyword = dicomjson.keyword_of(name)
            if keyword is None:
                raise BadRequest(f"unknown includefield {name[:64]!r}: use a DICOM keyword or an 8-digit tag")
            include.append(keyword)
    fuzzy = request.args.get("fuzzymatching", "false").lower() == "true"
    return criteria, include, include_all, warnings, fuzzy


def _retrieve_url(level: str, record: dict[str, Any]) -> str:
    url = f"{base_url()}/studies/{record['StudyInstanceUID']}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{record['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{record['SOPInstanceUID']}"
    return url


def _header_object_id(level: str, record: dict[str, Any]) -> str | None:
    """Which stored object to read attributes the index does not keep from."""
    if level == "IMAGE":
        return record["_object_id"]
    if record.get("_offsite"):
        return None  # nothing on this box to read until it is brought back
    studies = ctx().appliance.index.studies
    if level == "SERIES":
        return studies.first_object_id(series_id=record["_id"])
    return studies.first_object_id(study_id=record["_id"])


def _search(level: str, study_uid: str | None = None, series_uid: str | None = None):
    criteria, include, include_all, warnings, fuzzy = _parse(level)
    if study_uid is not None:
        criteria["StudyInstanceUID"] = check_uid(study_uid, "Study Instance UID")
    if series_uid is not None:
        criteria["SeriesInstanceUID"] = check_uid(series_uid, "Series Instance UID")
    limit = _int_arg("limit", MAX_RESULTS)
    offset = _int_arg("offset", 0)
    if limit > MAX_RESULTS:
        warnings.append(f"at most {MAX_RESULTS} results are returned per request; page with offset")
        limit = MAX_RESULTS
    try:
        # Studies recycled to free space stay findable, as NEARLINE (their only copy is offsite).
        records = ctx().appliance.index.search(level, criteria, fuzzy=fuzzy, limit=limit, offset=offset,
                                               include_offsite=level == "STUDY")
    except QueryError as exc:
        raise BadRequest(f"cannot match this query: {exc}") from None

    top = LEVELS.index(level)
    indexed = [k for k, a in ATTRS.items() if LEVELS.index(a.level) <= top]
    keys = _required(level, study_uid is not None, series_uid is not None)
    keys += [k for k in (indexed if include_all else include) if k not in keys]
    from_header = [k for k in include if k not in ATTRS and k not in ("RetrieveURL", "InstanceAvailability")]
    results = []
    for record in records:
        extra = {"RetrieveURL": _retrieve_url(level, record),
                 "InstanceAvailability": record.get("InstanceAvailability") or "ONLINE"}
        item = dicomjson.record_to_json(record, keys, extra)
        if include_all and level == "IMAGE" or from_header:
            object_id = _header_object_id(level, record)
            if object_id:
                header, _pixels = ctx().header(object_id)
                if include_all and level == "IMAGE":
                    item = dicomjson.merge(item, dicomjson.dataset_to_json(header, lambda p: ""))
                    item = {k: v for k, v in item.items() if "BulkDataURI" not in v}
                else:
                    sub = Dataset()
                    for k in from_header:
                        if k in header:
                            sub[k] = header[k]
                    item = dicomjson.merge(item, dicomjson.dataset_to_json(sub, lambda p: ""))
        results.append(item)
    audit("dicomweb.search", study_uid=study_uid or "", detail=f"level={level.lower()} results={len(results)}")
    return json_response(results, warnings=warnings)


@bp.get("/studies")
@read_access
def search_studies():
    return _search("STUDY")


@bp.get("/series")
@read_access
def search_all_series():
    return _search("SERIES")


@bp.get("/studies/<study>/series")
@read_access
def search_series(study):
    return _search("SERIES", study_uid=study)


@bp.get("/instances")
@read_access
def search_all_instances():
    return _search("IMAGE")


@bp.get("/studies/<study>/instances")
@read_access
def search_study_instances(study):
    return _search("IMAGE", study_uid=study)


@bp.get("/studies/<study>/series/<series>/instances")
@read_access
def search_instances(study, series):
    return _search("IMAGE", study_uid=study, series_uid=series)
