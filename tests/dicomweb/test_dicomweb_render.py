"""Server-side rendering (appliance/convert/render.py) of every photometric interpretation and syntax we
ship samples of."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array

import synth
from appliance.convert.render import RenderBusy, Renderer, RenderError, RenderParams, render_dataset
from appliance.convert.render_cache import LRUCache

PNG = RenderParams(media_type="image/png")

# Every bundled sample pydicom can decode with the pylibjpeg plugins, one per syntax/photometric pair.
SAMPLES = [
    "CT", "MR", "US", "US_PALETTE", "US_CINE_JPEG", "US_J2K", "SC_JPEG", "SC_JPEG_LOSSLESS", "MR_JPEG_LS",
    "MR_J2K", "MR_RLE", "MR_BIG_ENDIAN", "MR_IMPLICIT", "DEFLATED",
    "JPGExtended.dcm",  # JPEG extended 12-bit (.51)
    "JPEG2000.dcm",  # JPEG 2000 lossy (.91)
    "SC_rgb_rle_2frame.dcm",  # RLE RGB multi-frame
    "SC_rgb_small_odd_big_endian.dcm",  # big endian RGB
    "SC_rgb_jpeg_lossy_gdcm.dcm",  # JPEG baseline YBR_FULL
    "SC_ybr_full_422_uncompressed.dcm",  # uncompressed YBR_FULL_422
    "SC_jpeg_no_color_transform.dcm",  # JPEG baseline RGB without colour transform
    "rtdose.dcm",  # 32-bit, 15 frames
]


def _png(ds, index=0, params=PNG) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(render_dataset(ds, index, params))))


@pytest.mark.parametrize("kind", SAMPLES)
def test_every_sample_renders(kind):
    ds = synth.make_instance(kind)
    jpeg = render_dataset(ds, 0, RenderParams())
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    assert image.size == (ds.Columns, ds.Rows)


def test_same_pixels_whatever_the_syntax():
    reference = _png(synth.make_instance("MR"))
    for kind in ("MR_JPEG_LS", "MR_J2K", "MR_RLE", "MR_BIG_ENDIAN", "MR_IMPLICIT"):
        assert np.array_equal(_png(synth.make_instance(kind)), reference), kind


def test_monochrome1_is_inverted():
    ds = synth.make_instance("CT")
    normal = _png(ds).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(_png(ds).astype(int), 255 - normal)


def test_rgb_and_ybr_come_out_as_rgb():
    rgb = synth.make_instance("US")
    assert np.array_equal(_png(rgb), rgb.pixel_array)
    ybr = synth.make_instance("US_CINE_JPEG")  # YBR_FULL_422 JPEG: the decoder converts to RGB
    out = _png(ybr, 3)
    expected = pixel_array(ybr, index=3, as_rgb=True)
    assert out.shape == expected.shape and np.abs(out.astype(int) - expected).mean() < 1


def test_palette_color():
    ds = synth.make_instance("US_PALETTE")
    out = _png(ds)
    expected = apply_color_lut(ds.pixel_array, ds)
    expected = (expected >> 8).astype(np.uint8) if expected.max() > 255 else expected.astype(np.uint8)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_multi_frame_frames_differ_and_range_is_checked():
    ds = synth.make_instance("US_CINE_JPEG")
    assert not np.array_equal(_png(ds, 0), _png(ds, 29))
    with pytest.raises(RenderError, match="frame 31 does not exist"):
        render_dataset(ds, 30, PNG)


def test_window_and_modality_lut():
    ds = synth.make_instance("CT")  # has RescaleSlope/Intercept and no window
    wide = _png(ds, 0, RenderParams("image/png", window=(40, 4000, "LINEAR")))
    narrow = _png(ds, 0, RenderParams("image/png", window=(40, 80, "LINEAR")))
    assert narrow.std() > wide.std()  # a narrow window stretches contrast
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    below = hu < 0  # everything below the window is black
    assert (narrow[below] == 0).all()
    # the object's own window is used when the caller gives none
    ds.WindowCenter, ds.WindowWidth = 40, 80
    assert np.array_equal(_png(ds), narrow)


def test_voi_lut_sequence():
    ds = synth.make_instance("MR")
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = [65535 - 16 * i for i in range(4096)]  # an inverting LUT
    ds.VOILUTSequence = [item]
    out = _png(ds)
    assert out.shape == (ds.Rows, ds.Columns)
    pa = ds.pixel_array
    assert out[pa == pa.min()].mean() > out[pa == pa.max()].mean()  # the LUT inverted the image


def test_viewport_and_quality():
    ds = synth.make_instance("US")  # 320 x 240
    image = Image.open(io.BytesIO(render_dataset(ds, 0, RenderParams(viewport=(100, 100)))))
    assert image.size == (100, 75)  # fits, aspect kept
    small = render_dataset(ds, 0, RenderParams(quality=10))
    large = render_dataset(ds, 0, RenderParams(quality=95))
    assert len(small) < len(large)
    params = RenderParams.parse({"viewport": "64,64,0,0,32,32"})
    assert Image.open(io.BytesIO(render_dataset(ds, 0, params))).size == (64, 64)
    for bad in ({"window": "40"}, {"viewport": "0,10"}, {"quality": "0"}, {"window": "1,2,CUBIC"}):
        with pytest.raises(RenderError):
            RenderParams.parse(bad)


def test_no_pixel_data():
    ds = synth.make_instance("CT")
    del ds.PixelData
    with pytest.raises(RenderError, match="no image"):
        render_dataset(ds, 0, PNG)


def test_cache_means_no_second_decode_and_slots_bound_concurrency():
    loads = []
    ds = synth.make_instance("MR")

    def load(object_id):
        loads.append(object_id)
        return ds

    renderer = Renderer(load, LRUCache(1 << 20), threads=1, wait_seconds=0.2)
    first = renderer.render("a" * 32, 0, RenderParams())
    assert renderer.render("a" * 32, 0, RenderParams()) == first
    assert loads == ["a" * 32]
    renderer.render("a" * 32, 0, RenderParams(quality=50))  # other parameters: rendered again
    assert len(loads) == 2

    # with the only slot held, a render that misses the cache waits, then answers "busy"
    gate = threading.Event()
    renderer._slots.acquire()
    try:
        with pytest.raises(RenderBusy):
            renderer.render("b" * 32, 0, RenderParams())
    finally:
        renderer._slots.release()
        gate.set()


def test_lru_cache_is_bounded():
    cache = LRUCache(10)
    for i in range(5):
        cache.put(i, b"xxxx")
    assert cache.size <= 10 and len(cache) == 2
    assert cache.get(4) == b"xxxx" and cache.get(0) is None
    cache.put("huge", b"x" * 11)  # larger than the budget: not cached
    assert cache.get("huge") is None
