"""PS3.18 details checked with plain HTTP: status codes, media types, headers, multipart framing."""
from __future__ import annotations

import io
import uuid

import pydicom
import pytest
import requests

import synth

DCM = 'multipart/related; type="application/dicom"'


def _part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _multipart(parts: list[bytes], boundary: str, part_type: str = "application/dicom") -> bytes:
    body = b""
    for p in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


@pytest.fixture(scope="module")
def ct(http, dw_url):
    ds = synth.make_instance("CT", patient_name="CONF^ORMANCE", patient_id="CONF1")
    boundary = uuid.uuid4().hex
    r = http.post(f"{dw_url}/studies", data=_multipart([_part10(ds)], boundary),
                  headers={"Content-Type": f'{DCM}; boundary="{boundary}"', "Accept": "application/dicom+json"})
    assert r.status_code == 200, r.text
    return ds


def _instance_url(dw_url, ds) -> str:
    return f"{dw_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_401_without_credentials(dw_url, ct):
    r = requests.get(f"{dw_url}/studies")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(f"{dw_url}/studies", auth=("admin", "wrong")).status_code == 401
    assert requests.get(_instance_url(dw_url, ct), headers={"Accept": DCM}).status_code == 401


def test_400_bad_uid(http, dw_url):
    for url in (f"{dw_url}/studies/1.2.abc", f"{dw_url}/studies/1.2.3/series/01.2/metadata",
                f"{dw_url}/studies/{'1.' * 40}1/rendered"):
        r = http.get(url, headers={"Accept": "*/*"})
        assert r.status_code in (400, 404), url
    assert http.get(f"{dw_url}/studies/1.2.abc").status_code == 400
    assert http.get(f"{dw_url}/studies/1.2.abc/series").status_code == 400


def test_404_unknown_study(http, dw_url):
    unknown = pydicom.uid.generate_uid()
    assert http.get(f"{dw_url}/studies/{unknown}", headers={"Accept": DCM}).status_code == 404
    assert http.get(f"{dw_url}/studies/{unknown}/metadata").status_code == 404
    assert http.get(f"{dw_url}/studies/{unknown}/thumbnail").status_code == 404
    # searching an unknown study is not an error: an empty result
    r = http.get(f"{dw_url}/studies", params={"StudyInstanceUID": unknown})
    assert r.status_code == 200 and r.json() == []


def test_406_unsupported_accept(http, dw_url, ct):
    url = _instance_url(dw_url, ct)
    assert http.get(url, headers={"Accept": 'multipart/related; type="application/dicom+xml"'}).status_code == 406
    # a lossy target syntax is never produced
    r = http.get(url, headers={"Accept": f"{DCM}; transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert r.status_code == 406
    assert http.get(f"{url}/metadata", headers={"Accept": "application/dicom+xml"}).status_code == 406
    assert http.get(f"{url}/rendered", headers={"Accept": "image/gif"}).status_code == 406
    r = http.get(f"{url}/frames/1", headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert r.status_code == 406


def test_400_malformed_multipart(http, dw_url):
    boundary = uuid.uuid4().hex
    headers = {"Content-Type": f"{DCM}; boundary={boundary}"}
    # never closed
    r = http.post(f"{dw_url}/studies", data=f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nxx".encode(),
                  headers=headers)
    assert r.status_code == 400
    # boundary never appears
    assert http.post(f"{dw_url}/studies", data=b"not multipart at all", headers=headers).status_code == 400
    # no boundary parameter
    r = http.post(f"{dw_url}/studies", data=b"x", headers={"Content-Type": DCM})
    assert r.status_code == 400
    # not multipart
    r = http.post(f"{dw_url}/studies", data=b"x", headers={"Content-Type": "application/dicom"})
    assert r.status_code == 415


def test_stow_partial_success_and_failures(http, dw_url):
    good = synth.make_instance("MR", patient_id="CONF2")
    boundary = uuid.uuid4().hex
    body = _multipart([_part10(good), b"this is not DICOM"], boundary)
    r = http.post(f"{dw_url}/studies", data=body, headers={"Content-Type": f"{DCM}; boundary={boundary}"})
    assert r.status_code == 202, r.text
    result = pydicom.Dataset.from_json(r.json())
    assert result.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == good.SOPInstanceUID
    assert result.FailedSOPSequence[0].FailureReason == 0xC000
    # every part failing is a 409
    r = http.post(f"{dw_url}/studies", data=_multipart([b"junk"], boundary),
                  headers={"Content-Type": f"{DCM}; boundary={boundary}"})
    assert r.status_code == 409
    # an instance of another study than the URL names is refused with its UIDs reported
    other = synth.make_instance("MR", patient_id="CONF2")
    r = http.post(f"{dw_url}/studies/{good.StudyInstanceUID}", data=_multipart([_part10(other)], boundary),
                  headers={"Content-Type": f"{DCM}; boundary={boundary}"})
    assert r.status_code == 409
    failed = pydicom.Dataset.from_json(r.json()).FailedSOPSequence[0]
    assert failed.ReferencedSOPInstanceUID == other.SOPInstanceUID
    # the same instance again is fine (idempotent)
    r = http.post(f"{dw_url}/studies", data=_multipart([_part10(good)], boundary),
                  headers={"Content-Type": f"{DCM}; boundary={boundary}"})
    assert r.status_code == 200


def test_qido_required_attributes_and_paging(http, dw_url, ct):
    r = http.get(f"{dw_url}/studies", params={"PatientID": "CONF1"},
                 headers={"Accept": "application/dicom+json, application/json"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/dicom+json")
    study = r.json()[0]
    for tag in ("00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081190", "00100010",
                "00100020", "00100030", "00100040", "0020000D", "00200010", "00201206", "00201208"):
        assert tag in study, tag
    assert study["00080056"]["Value"] == ["ONLINE"]
    assert http.get(f"{dw_url}/studies", params={"limit": "x"}).status_code == 400
    assert http.get(f"{dw_url}/studies", params={"NoSuchKeyword": "1"}).status_code == 400
    assert http.get(f"{dw_url}/studies", params={"StudyDate": "2026-01"}).status_code == 400
    r = http.get(f"{dw_url}/studies", params={"PatientID": "CONF1", "includefield": "00081030,PatientAge"})
    assert r.status_code == 200
    series = http.get(f"{dw_url}/series", params={"PatientID": "CONF1", "includefield": "all"}).json()
    assert series and "0020000E" in series[0] and "00100020" in series[0]
    inst = http.get(f"{dw_url}/instances", params={"PatientID": "CONF1", "includefield": "BitsAllocated"}).json()
    assert inst[0]["00280100"]["Value"] == [16]


def test_retrieve_content_types(http, dw_url, ct):
    url = _instance_url(dw_url, ct)
    r = http.get(url, headers={"Accept": f"{DCM}; transfer-syntax=*"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("multipart/related")
    assert 'type="application/dicom"' in r.headers["Content-Type"]
    r = http.get(f"{url}/rendered")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    r = http.get(f"{url}/rendered", params={"quality": "500"})
    assert r.status_code == 400
    r = http.get(f"{url}/thumbnail", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert http.get(f"{url}/frames/2").status_code == 404
    assert http.get(f"{url}/frames/0").status_code == 400


def test_wado_uri(http, dw_url, ct):
    params = {"requestType": "WADO", "studyUID": ct.StudyInstanceUID, "seriesUID": ct.SeriesInstanceUID,
              "objectUID": ct.SOPInstanceUID}
    r = http.get(f"{dw_url}/wado", params=params)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    r = http.get(f"{dw_url}/wado", params={**params, "contentType": "application/dicom"})
    assert r.status_code == 200
    assert pydicom.dcmread(io.BytesIO(r.content)).SOPInstanceUID == ct.SOPInstanceUID
    assert http.get(f"{dw_url}/wado", params={**params, "requestType": "X"}).status_code == 400


def test_cors_off_by_default(http, dw_url):
    r = http.get(f"{dw_url}/studies", headers={"Origin": "http://viewer.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_transfer_syntax_negotiation(http, dw_url):
    """Stored syntax by default; decompressed or byte-swapped to little endian on request; never compressed."""
    import numpy as np

    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=dw_url, session=http)
    for kind in ("MR_BIG_ENDIAN", "MR_J2K", "MR_RLE", "MR_JPEG_LS", "DEFLATED"):
        ds = synth.make_instance(kind, patient_id="CONFTS")
        client.store_instances([ds])
        ids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        stored = client.retrieve_instance(*ids)
        assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID, kind
        got = client.retrieve_instance(*ids, media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
        assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1", kind
        assert np.array_equal(got.pixel_array, ds.pixel_array), kind
        url = f"{dw_url}/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}"
        r = http.get(url, headers={"Accept": f"{DCM}; transfer-syntax=1.2.840.10008.1.2"})
        assert r.status_code == 200 and "application/dicom; transfer-syntax=1.2.840.10008.1.2\r\n" in r.text, kind
        r = http.get(f"{dw_url}/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}",
                     headers={"Accept": f"{DCM}; transfer-syntax=1.2.840.10008.1.2.5"})
        assert r.status_code == 406 or kind == "MR_RLE", kind


def test_requests_as_ohif_sends_them(http, dw_url):
    """The study list, series metadata and frames the way OHIF v3's DICOMweb data source asks."""
    ds = synth.make_instance("US_CINE_JPEG", patient_id="OHIF1")
    from dicomweb_client.api import DICOMwebClient

    DICOMwebClient(url=dw_url, session=http).store_instances([ds])
    r = http.get(f"{dw_url}/studies", params={"limit": "101", "offset": "0", "fuzzymatching": "false",
                                              "includefield": "00081030,00080060", "PatientID": "OHIF1"},
                 headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200 and len(r.json()) == 1
    series_url = f"{dw_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    meta = http.get(f"{series_url}/metadata", headers={"Accept": "application/dicom+json"}).json()
    assert meta[0]["00280008"]["Value"] == [30]
    frame_url = f"{series_url}/instances/{ds.SOPInstanceUID}/frames/2"
    r = http.get(frame_url, headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    assert r.status_code == 200
    assert 'type="application/octet-stream"' in r.headers["Content-Type"]
    # transfer-syntax=*: any syntax will do, so the stored JPEG goes out as stored, labelled as such
    assert b"Content-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50\r\n" in r.content
    assert len(r.content) < ds.Rows * ds.Columns
    r = http.get(frame_url, headers={"Accept": "multipart/related; type=application/octet-stream"})
    assert b"Content-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1\r\n" in r.content
    assert len(r.content) > ds.Rows * ds.Columns * 3  # no transfer-syntax: its default, decoded RGB
    r = http.get(frame_url, headers={"Accept": 'multipart/related; type="image/jpeg"; '
                                               "transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert r.status_code == 200 and b"\xff\xd8" in r.content
