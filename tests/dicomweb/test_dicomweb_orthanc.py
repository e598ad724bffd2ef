"""Orthanc with its DICOMweb plugin as a second, independent DICOMweb client of the box.

Orthanc (Debian packages orthanc + orthanc-dicomweb) is started on loopback with a
temporary config that names the box as a DICOMweb server with credentials; it then
pushes to the box (STOW-RS), queries it (QIDO-RS) and pulls from it (WADO-RS).
"""
from __future__ import annotations

import io
import json
import subprocess
import uuid

import pytest
import requests

import synth
from helpers import ADMIN_PASSWORD, free_port, port_open, wait_until

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, dw_url):
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "ORTHANC_TEST", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "Plugins": [PLUGIN], "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": dicom_port,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/",
                     "Servers": {"box": [f"{dw_url}/", "admin", ADMIN_PASSWORD]}},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or port_open(http_port), 30, what="Orthanc to listen")
        assert proc.poll() is None, (root / "orthanc.log").read_text(errors="replace")
        yield f"http://127.0.0.1:{http_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _part10(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_orthanc_pushes_to_the_box(orthanc, http, dw_url):
    ds = synth.make_instance("US_CINE_JPEG", patient_id="ORTH1", patient_name="ORTHANC^PUSH")
    orthanc_id = requests.post(f"{orthanc}/instances", data=_part10(ds)).json()["ID"]
    r = requests.post(f"{orthanc}/dicom-web/servers/box/stow", json={"Resources": [orthanc_id]}, timeout=60)
    assert r.status_code == 200, r.text
    found = http.get(f"{dw_url}/studies", params={"PatientID": "ORTH1"}).json()
    assert len(found) == 1 and found[0]["0020000D"]["Value"] == [ds.StudyInstanceUID]
    # what the box stored is what Orthanc had, byte for byte
    got = http.get(f"{dw_url}/wado", params={"requestType": "WADO", "studyUID": ds.StudyInstanceUID,
                                             "seriesUID": ds.SeriesInstanceUID, "objectUID": ds.SOPInstanceUID,
                                             "contentType": "application/dicom"})
    assert got.content == requests.get(f"{orthanc}/instances/{orthanc_id}/file").content


def test_orthanc_queries_and_pulls_from_the_box(orthanc, http, dw_url):
    study = pydicom_uid()
    instances = [synth.make_instance("CT", patient_id="ORTH2", study_uid=study, instance_number=i + 1)
                 for i in range(3)]
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + _part10(d) + b"\r\n"
                    for d in instances) + f"--{boundary}--\r\n".encode()
    r = http.post(f"{dw_url}/studies", data=body,
                  headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 200, r.text

    r = requests.post(f"{orthanc}/dicom-web/servers/box/qido",
                      json={"Uri": "/studies", "Arguments": {"PatientID": "ORTH2"}}, timeout=60)
    assert r.status_code == 200, r.text
    # Orthanc re-emits the answers in its own JSON flavour (Value as a plain string)
    assert [s["0020000D"]["Value"] for s in r.json()] == [study]

    r = requests.post(f"{orthanc}/dicom-web/servers/box/retrieve", json={"Resources": [{"Study": study}]},
                      timeout=60)
    assert r.status_code == 200, r.text
    assert int(r.json()["ReceivedInstancesCount"]) == 3
    found = requests.post(f"{orthanc}/tools/find", json={"Level": "Instance", "Query": {"StudyInstanceUID": study}})
    assert len(found.json()) == 3


def pydicom_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()
