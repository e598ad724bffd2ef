"""STOW-RS refuses native pixel data shorter than its image needs, with the reason every other way in gives."""
from __future__ import annotations

import synth
from helpers import ADMIN_PASSWORD
from test_dicomweb_access import _stow


def test_stow_refuses_short_pixel_data(dw_url):
    ds = synth.make_instance("CT", patient_id="SHORTPIX")
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    r = _stow(("tess", ADMIN_PASSWORD), dw_url, ds)
    assert r.status_code in (400, 409), r.status_code
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert "the pixel data is truncated: 16384 bytes" in r.headers.get("Warning", ""), r.headers  # the reason
