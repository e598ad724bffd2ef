"""The journal tells what each association did: one INFO line when it ends, one per refusal; no patient data."""
from __future__ import annotations

import re

import pydicom
import synth
from helpers import dcmtk, wait_until
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

PATIENT = "LOGLINE^PATIENT"


def test_one_line_per_association_and_per_refusal(shared_server, tmp_path):
    files = synth.write_study(tmp_path / "in", n_series=1, per_series=3, patient_name=PATIENT, patient_id="LOG1")
    done = dcmtk("storescu", "-aet", "US_ROOM1", "-aec", "PACSBOX", "127.0.0.1", shared_server.dicom_port, *files)
    assert done.returncode == 0, done.stderr

    ae = AE("WS1")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", shared_server.dicom_port, ae_title="PACSBOX")
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "LOG1"
    query.StudyInstanceUID = ""
    for _ in range(2):
        assert [s.Status for s, _i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)][-1] == 0
    assoc.release()

    refused = dcmtk("echoscu", "-aet", "WS2", "-aec", "NOTTHEBOX", "127.0.0.1", shared_server.dicom_port)
    assert refused.returncode != 0

    def lines():
        return [line for line in shared_server.log().splitlines() if "association" in line]

    wait_until(lambda: any("from WS1" in line for line in lines()) and any("NOTTHEBOX" in line for line in lines()),
               10, 0.1, what="the association lines")
    store_lines = [line for line in lines() if "from US_ROOM1" in line]
    assert len(store_lines) == 1 and " INFO " in store_lines[0], store_lines
    assert re.search(r"from US_ROOM1 at 127\.0\.0\.1 released after [0-9.]+ s: stored 3, failed 0$", store_lines[0])
    [find_line] = [line for line in lines() if "from WS1" in line]
    assert find_line.endswith("C-FIND STUDY x2"), find_line
    [refusal] = [line for line in lines() if "NOTTHEBOX" in line]
    assert "called AE title not recognised" in refusal and "WS2" in refusal
    assert PATIENT.split("^")[0] not in shared_server.log() and "LOG1" not in shared_server.log()
