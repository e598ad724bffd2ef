"""parse() decodes the indexed attributes itself (for speed): it must agree with pydicom's own reading.

The reference below is the straightforward way (full dcmread, values by keyword, pydicom's
conversions); every file pydicom ships, character set samples included, must give the same
attributes both ways.
"""
from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.multival import MultiValue

from appliance.errors import InvalidObject
from appliance.index.query import QueryError, normalize_time
from appliance.ingest.dicomfile import _FIELDS, parse
from synth import bundled_files


def _reference(data: bytes) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    out = {}
    for name, tag, _convert in _FIELDS:
        elem = ds.get(tag)
        value = None if elem is None else elem.value
        if value is None:
            out[name] = None if name in ("series_number", "instance_number", "rows", "columns", "frames") else ""
            continue
        if isinstance(value, (list, tuple, MultiValue)):
            value = "\\".join(str(v) for v in value)
        if name in ("series_number", "instance_number", "rows", "columns", "frames"):
            try:
                out[name] = int(value) if value != "" else None
            except (TypeError, ValueError):
                out[name] = None
            continue
        text = str(value).strip()
        if name.endswith("_time"):
            try:
                text = normalize_time(text)
            except QueryError:
                pass
        out[name] = text
    return out


def _samples() -> list[str]:
    return sorted(set(bundled_files("*.dcm", "charset_files") + bundled_files("*.dcm")))


@pytest.mark.parametrize("path", _samples(), ids=lambda p: p.rsplit("/", 1)[-1])
def test_parse_reads_what_pydicom_reads(path):
    data = open(path, "rb").read()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attributes = parse(io.BytesIO(data), len(data)).attributes
    except InvalidObject:
        pytest.skip("not storable (no UIDs, or not an image with pixels): covered by the bad-input tests")
    expected = _reference(data)
    assert {name: getattr(attributes, name) for name in expected} == expected


def test_a_cut_sequence_delimiter_after_encapsulated_pixels_is_refused():
    data = open(bundled_files("JPEG2000.dcm")[0], "rb").read()
    parse(io.BytesIO(data), len(data))  # whole: fine
    cut = data[:-2]
    with pytest.raises(InvalidObject, match="truncated"):
        parse(io.BytesIO(cut), len(cut))
