"""PS3.18 8.7.3.5: with transfer-syntax=* (or the stored syntax named) the box sends what it stored.

OHIF asks for every frame with ``type="application/octet-stream"; transfer-syntax=*``; decoding
a JPEG frame on the box multiplied the traffic ~35x and made frames its decoders cannot read a 406.
"""
from __future__ import annotations

import io

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.encaps import generate_frames

import synth
from web.dicomweb import multipart
from web.dicomweb.wado import NATIVE, negotiate_frames

JPEG = "1.2.840.10008.1.2.4.50"
EXPLICIT = "1.2.840.10008.1.2.1"
OHIF_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def parts(response) -> list[tuple[str, bytes]]:
    """(Content-Type, payload) of each part of a multipart/related response (the box's own reader)."""
    boundary = multipart.boundary_of(response.headers["Content-Type"])
    return [(h["content-type"], body) for h, body in multipart.iter_parts(io.BytesIO(response.content), boundary,
                                                                          64 << 20)]


@pytest.mark.parametrize("accept, expected", [
    (OHIF_ACCEPT, ("stored", "application/octet-stream")),
    (f'multipart/related; type="application/octet-stream"; transfer-syntax={JPEG}',
     ("stored", "application/octet-stream")),
    ('multipart/related; type="*"', ("stored", "image/jpeg")),
    ('multipart/related; type="*"; transfer-syntax=*', ("stored", "image/jpeg")),
    ("*/*", ("stored", "image/jpeg")),
    ('multipart/related; type="image/jpeg"', ("stored", "image/jpeg")),
    ('multipart/related; type="application/octet-stream"', NATIVE),
    (f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT}', NATIVE),
])
def test_negotiation_jpeg(accept, expected):
    assert negotiate_frames(accept, JPEG) == expected


def test_negotiation_native_stored_is_sent_little_endian():
    assert negotiate_frames(OHIF_ACCEPT, EXPLICIT) == NATIVE
    assert negotiate_frames(OHIF_ACCEPT, "1.2.840.10008.1.2.2") == NATIVE  # big endian: byte-swapped


@pytest.fixture(scope="module")
def cine(http, dw_url):
    ds = synth.make_instance("US_CINE_JPEG", patient_id="TSYN1")
    DICOMwebClient(url=dw_url, session=http).store_instances([ds])
    return ds


def test_jpeg_frames_with_transfer_syntax_star_are_the_stored_bytes(http, dw_url, cine):
    stored = list(generate_frames(cine.PixelData, number_of_frames=int(cine.NumberOfFrames)))
    url = (f"{dw_url}/studies/{cine.StudyInstanceUID}/series/{cine.SeriesInstanceUID}/instances/"
           f"{cine.SOPInstanceUID}/frames/2,5")
    r = http.get(url, headers={"Accept": OHIF_ACCEPT})
    assert r.status_code == 200
    assert f"transfer-syntax={JPEG}" in r.headers["Content-Type"]
    got = parts(r)
    assert [t for t, _ in got] == [f"application/octet-stream; transfer-syntax={JPEG}"] * 2
    assert [body for _, body in got] == [stored[1], stored[4]]

    r = http.get(url, headers={"Accept": 'multipart/related; type="*"'})  # any type: labelled image/jpeg
    assert [t for t, _ in parts(r)] == [f"image/jpeg; transfer-syntax={JPEG}"] * 2
    assert [body for _, body in parts(r)] == [stored[1], stored[4]]


def test_pixel_data_bulkdata_with_transfer_syntax_star_is_stored(http, dw_url, cine):
    stored = list(generate_frames(cine.PixelData, number_of_frames=int(cine.NumberOfFrames)))
    url = (f"{dw_url}/studies/{cine.StudyInstanceUID}/series/{cine.SeriesInstanceUID}/instances/"
           f"{cine.SOPInstanceUID}/bulkdata/7FE00010")
    got = parts(http.get(url, headers={"Accept": OHIF_ACCEPT}))
    assert [body for _, body in got] == stored


def test_instance_in_stored_syntax_when_listed(http, dw_url, cine):
    url = f"{dw_url}/studies/{cine.StudyInstanceUID}/series/{cine.SeriesInstanceUID}/instances/{cine.SOPInstanceUID}"
    for accept in (f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}',
                   'multipart/related; type="application/dicom"; transfer-syntax=*', 'multipart/related; type="*"'):
        r = http.get(url, headers={"Accept": accept})
        assert r.status_code == 200, accept
        assert [t for t, _ in parts(r)] == [f"application/dicom; transfer-syntax={JPEG}"], accept


def test_frame_the_box_cannot_decode_goes_as_stored(http, dw_url):
    """A JPEG Extended frame the box's decoders reject: an error when it must decode, the stored bytes with *."""
    from pydicom.encaps import encapsulate

    ds = synth.make_instance("US_CINE_JPEG", patient_id="TSYN2")
    sof1 = b"\xff\xd8\xff\xc1\x00\x0b\x0c\x01\xe0\x02\x80\x01\x01\x11\x00"  # 12-bit, then no scan header
    broken = sof1 + bytes(range(256)) * 4 + b"\x00\xff\xd9"  # even length: no padding byte
    ds.PixelData = encapsulate([broken])
    ds.NumberOfFrames = 1
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.51"
    DICOMwebClient(url=dw_url, session=http).store_instances([ds])
    url = (f"{dw_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
           f"{ds.SOPInstanceUID}/frames/1")
    # Decoding it on the box fails (a 5xx naming the stored data as the cause, appliance.convert.render.UndecodableImage)
    assert http.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'}).status_code >= 500
    r = http.get(url, headers={"Accept": OHIF_ACCEPT})
    assert r.status_code == 200
    assert parts(r) == [("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.51", broken)]
