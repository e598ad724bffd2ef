"""DICOM JSON (PS3.18 F.2) from index records and from stored headers.

Values are put into a pydicom Dataset by keyword, so the VR comes from the data
dictionary, and pydicom's ``to_json_dict`` writes the JSON model. Large binary
values become BulkDataURIs pointing at the bulkdata endpoint.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Mapping

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

BULK_THRESHOLD = 1024  # bytes: binary values larger than this are sent by reference
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def tag_of(name: str) -> int | None:
    """A keyword or an 8-digit hex tag (as QIDO allows both), else None."""
    name = name.strip()
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return int(name, 16)
    return tag_for_keyword(name)


def keyword_of(name: str) -> str | None:
    tag = tag_of(name)
    return keyword_for_tag(tag) if tag is not None else None


@functools.lru_cache(maxsize=None)
def _tag_vr(keyword: str) -> tuple[str, str] | None:
    tag = tag_for_keyword(keyword)
    return (f"{tag:08X}", dictionary_VR(tag)) if tag is not None else None


NUMBER_VRS = {"IS", "US", "UL", "SS", "SL", "DS", "FL", "FD", "UV", "SV"}


def _json_value(vr: str, value: Any) -> list | None:
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if v in (None, ""):
            continue
        if vr == "PN":
            out.append({"Alphabetic": str(v)})
        elif vr in NUMBER_VRS:
            try:
                out.append(int(v) if vr != "DS" and vr not in ("FL", "FD") else float(v))
            except (TypeError, ValueError):
                continue
        else:
            out.append(str(v))
    return out or None


def record_to_json(record: Mapping[str, Any], keywords: Iterable[str], extra: Mapping[str, Any] | None = None) \
        -> dict:
    """The DICOM JSON object for the given keywords of an index record (plus ``extra`` keyword values).

    Written directly rather than through a pydicom Dataset: a QIDO page has up to 1,000
    of these, and this is several times faster.
    """
    out: dict[str, dict] = {}
    extra = extra or {}
    for keyword in keywords:
        if keyword in extra:
            value = extra[keyword]
        elif keyword in record:
            value = record[keyword]
        else:
            continue
        tag_vr = _tag_vr(keyword)
        if tag_vr is None:
            continue
        tag, vr = tag_vr
        item: dict[str, Any] = {"vr": vr}
        values = _json_value(vr, value)
        if values:
            item["Value"] = values
        out[tag] = item
    return {k: out[k] for k in sorted(out)}


def merge(into: dict, other: dict) -> dict:
    """Add ``other``'s attributes not already in ``into``; keep the JSON sorted by tag."""
    merged = dict(other)
    merged.update(into)
    return {k: merged[k] for k in sorted(merged)}


def dataset_to_json(ds: Dataset, bulk_uri: Callable[[str], str], has_pixel_data: bool = False) -> dict:
    """A header as DICOM JSON; large binary values (and the pixel data) as BulkDataURIs.

    ``bulk_uri(path)`` turns a tag path such as ``7FE00010`` or ``00540016/0/00181072``
    into a URL of the bulkdata endpoint.
    """
    paths: dict[int, str] = {}

    def walk(dataset: Dataset, prefix: str) -> None:
        for elem in dataset:
            path = f"{prefix}{elem.tag:08X}"
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value):
                    walk(item, f"{path}/{i}/")
            elif elem.VR in BINARY_VRS:
                paths[id(elem)] = path

    walk(ds, "")

    def handler(elem: DataElement) -> str:
        return bulk_uri(paths.get(id(elem), f"{elem.tag:08X}"))

    out = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=handler,
                          suppress_invalid_tags=True)
    if has_pixel_data and "7FE00010" not in out:
        bits = int(ds.get("BitsAllocated") or 8)
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        vr = "OB" if bits <= 8 or (ts is not None and ts.is_encapsulated) else "OW"
        out["7FE00010"] = {"vr": vr, "BulkDataURI": bulk_uri("7FE00010")}
    return out


def find_element(ds: Dataset, path: str) -> DataElement | None:
    """The element at a bulkdata tag path (``TTTTTTTT[/i/TTTTTTTT...]``), or None."""
    parts = path.strip("/").split("/")
    current: Any = ds
    try:
        while parts:
            tag = Tag(int(parts.pop(0), 16))
            if tag not in current:
                return None
            elem = current[tag]
            if not parts:
                return elem
            current = elem.value[int(parts.pop(0))]
    except (ValueError, IndexError, TypeError):
        return None
    return None
