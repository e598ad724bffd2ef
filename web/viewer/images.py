"""What the viewer needs to draw each image of a series, in pages.

The viewer must not wait for a series' full headers before drawing (a 1,000-slice
CT is ~11 MB of DICOM JSON): it asks for the first image's attributes, draws it,
and fetches the rest a page at a time. Only the attributes drawing and measuring
use are sent, read from the same header cache WADO-RS metadata uses.
"""
from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

PAGE_MAX = 200

# Ultrasound region units (PS3.3 C.8.5.5.1.15): 3 = cm is the one spatial unit of a 2D region.
US_UNIT_CM = 3


def _nums(ds: Dataset, keyword: str) -> list[float] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    values = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def _num(ds: Dataset, keyword: str, index: int = 0) -> float | None:
    values = _nums(ds, keyword)
    return values[index] if values and len(values) > index else None


def _regions(ds: Dataset) -> list[dict[str, Any]]:
    """The Sequence of Ultrasound Regions (PS3.3 C.8.5.5) as plain numbers."""
    out = []
    for item in ds.get("SequenceOfUltrasoundRegions") or []:
        out.append({
            "x0": _num(item, "RegionLocationMinX0"), "y0": _num(item, "RegionLocationMinY0"),
            "x1": _num(item, "RegionLocationMaxX1"), "y1": _num(item, "RegionLocationMaxY1"),
            "unitsX": _num(item, "PhysicalUnitsXDirection"), "unitsY": _num(item, "PhysicalUnitsYDirection"),
            "dx": _num(item, "PhysicalDeltaX"), "dy": _num(item, "PhysicalDeltaY"),
        })
    return out


def image_attributes(ds: Dataset, sop_uid: str, transfer_syntax: str) -> dict[str, Any]:
    """The attributes the viewer draws, measures and plays with, as JSON-ready values."""
    def text(keyword: str) -> str:
        return str(ds.get(keyword, "") or "")

    return {
        "sop": sop_uid, "ts": transfer_syntax, "modality": text("Modality"),
        "number": _num(ds, "InstanceNumber"),
        "rows": _num(ds, "Rows"), "cols": _num(ds, "Columns"),
        "bits": _num(ds, "BitsAllocated"), "signed": _num(ds, "PixelRepresentation") == 1,
        "samples": _num(ds, "SamplesPerPixel") or 1,
        "photometric": text("PhotometricInterpretation") or "MONOCHROME2",
        "slope": _num(ds, "RescaleSlope"), "intercept": _num(ds, "RescaleIntercept"),
        "wc": _num(ds, "WindowCenter"), "ww": _num(ds, "WindowWidth"),
        "frames": _num(ds, "NumberOfFrames") or 1,
        "pixelSpacing": _nums(ds, "PixelSpacing"), "imagerPixelSpacing": _nums(ds, "ImagerPixelSpacing"),
        "regions": _regions(ds),
        # Cine rate sources, most specific first (PS3.3 C.7.6.5, C.8.5.5, C.7.6.16)
        "frameTime": _num(ds, "FrameTime"), "frameTimeVector": _nums(ds, "FrameTimeVector"),
        "cineRate": _num(ds, "CineRate"), "recommendedRate": _num(ds, "RecommendedDisplayFrameRate"),
    }


def page(context, study_uid: str, series_uid: str, offset: int, limit: int) -> dict[str, Any]:
    """Attributes of images ``offset`` .. ``offset+limit`` of a series in display order.

    The first page (offset 0) also lists every instance (SOP UID and frame count,
    from the index alone) so the viewer can size its stack before any header is read.
    """
    located = context.locate(study_uid, series_uid)
    limit = max(1, min(PAGE_MAX, limit))
    items = []
    for item in located[offset:offset + limit]:
        header, _has_pixels = context.header(item.object_id)
        items.append(image_attributes(header, item.sop_uid, item.transfer_syntax))
    result: dict[str, Any] = {"total": len(located), "offset": offset, "items": items}
    if offset == 0:
        result["order"] = [[i.sop_uid, i.frames or 1] for i in located]
    return result
