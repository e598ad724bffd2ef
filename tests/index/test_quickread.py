"""parse() walks common files itself (ingest/quickread.py) and leaves the rest to pydicom: both ways must
give the same answer. Every bundled pydicom file, whole and cut or padded at fixed points, is parsed
with and without the quick walk; the outcome (attributes and generated prefix, or the refusal's
reason) must be the same, and where the walk reads a file its elements must be pydicom's."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest

from appliance.errors import InvalidObject
from appliance.ingest import dicomfile
from appliance.ingest.dicomfile import PIXEL_SET, READ_SET, READ_TAGS, parse
from appliance.ingest.quickread import read_plain
from synth import bundled_files

FILES = sorted(p for p in bundled_files("**/*") + bundled_files("**/*", "charset_files") if Path(p).is_file())
# Files the walk must read itself (explicit and implicit VR, encapsulated pixels, undefined-length
# sequences, private sequences, character sets): the comparison below is not vacuous.
QUICK = ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "priv_SQ.dcm",
         "rtplan.dcm", "test-SR.dcm", "chrSQEncoding.dcm", "chrJapMulti.dcm", "SC_rgb_rle_2frame.dcm")
# Files cut and padded at many points (different encodings and structures).
DAMAGED = ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "rtplan.dcm", "test-SR.dcm")


def _outcome(data: bytes, quick: bool, monkeypatch) -> tuple:
    with monkeypatch.context() as m:
        if not quick:
            m.setattr(dicomfile, "read_plain", lambda *args: None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = parse(io.BytesIO(data), len(data))
        except InvalidObject as exc:
            return ("refused", str(exc))
    return ("stored", parsed.attributes, parsed.prefix)


def _file(name: str) -> bytes:
    return Path(next(p for p in FILES if Path(p).name == name)).read_bytes()


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(Path(p).relative_to(Path(p).parents[1])))
def test_parse_answers_the_same_with_and_without_the_quick_walk(path, monkeypatch):
    data = Path(path).read_bytes()
    assert _outcome(data, True, monkeypatch) == _outcome(data, False, monkeypatch)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(Path(p).relative_to(Path(p).parents[1])))
def test_the_walk_keeps_what_pydicom_reads(path):
    data = Path(path).read_bytes()
    ds = read_plain(io.BytesIO(data), len(data), READ_SET, PIXEL_SET)
    if ds is None:
        if Path(path).name in QUICK:
            pytest.fail("the quick walk should read this file")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pydicom.dcmread(io.BytesIO(data), specific_tags=READ_TAGS)
    assert set(ds.keys()) == set(ref.keys())
    for tag in ds.keys():
        if tag in PIXEL_SET:  # kept unread: where and how long
            mine, theirs = ds.get_item(tag, keep_deferred=True), ref.get_item(tag, keep_deferred=True)
            assert (mine.VR, mine.length, mine.value_tell) == (theirs.VR, theirs.length, theirs.value_tell)
        else:
            assert (ds[tag].VR, ds[tag].value) == (ref[tag].VR, ref[tag].value)
    assert {t: ds.file_meta[t].value for t in ds.file_meta.keys()} == \
        {t: ref.file_meta[t].value for t in ref.file_meta.keys()}


@pytest.mark.parametrize("name", DAMAGED)
def test_cut_or_padded_files_are_answered_the_same(name, monkeypatch):
    data = _file(name)
    size = len(data)
    cuts = sorted({*range(0, min(size, 2048), 37), *range(size - 16, size), *range(2048, size, max(1, size // 40))})
    variants = [data[:n] for n in cuts] + [data + b"\0" * n for n in (1, 4, 7, 8, 12)]
    variants.append(data + b"\xfe\xff\xdd\xe0\0\0\0\0")  # a stray delimiter at the end
    for variant in variants:
        assert _outcome(variant, True, monkeypatch) == _outcome(variant, False, monkeypatch), len(variant)
